"""One rank of the distributed test (tests/python/test_distributed.py).

Usage: dist_worker.py RANK WORLD MASTER_PORT SERVER RUN UPLOAD OUT_JSON STEPS

Trains a DDP MLP on digits with the gloo backend under spotter.torch.Monitor,
paced to at most ~150 steps/s so that the server's effective-step margin stays
inside the run, and writes what it applied (per-step LR and optimizer, the
directive switches, a hash of the final parameters) to OUT_JSON.
"""
import hashlib
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402
from spotter.torch import Monitor  # noqa: E402


def main():
    rank, world, port, server, run, upload, out, steps = sys.argv[1:9]
    rank, world, steps = int(rank), int(world), int(steps)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights everywhere (DDP also broadcasts)
    train, _ = digits.load()
    model = torch.nn.parallel.DistributedDataParallel(digits.mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon = Monitor(model, opt, run=run, server=server, total_steps=steps, sketch_every=2,
                  sketch_dim=64, upload=upload, wait_for_server=10,
                  config={"sketch_rows": 16, "eval_every": 10,
                          "phase": {"delivery_budget_seconds": 0.5, "kfac_factor_interval": 3,
                                    "kfac_inverse_interval": 9}})
    gen = torch.Generator().manual_seed(1)
    lrs, ng = [], []
    while mon.step_count < steps and not mon.should_stop:
        t0 = time.monotonic()
        idx = torch.randint(0, len(train[0]), (64,), generator=gen)[rank::world]
        opt.zero_grad()
        loss = F.cross_entropy(model(train[0][idx]), train[1][idx])
        loss.backward()
        mon.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
        ng.append(mon.natural_gradient)
        time.sleep(max(0.0, 1 / 150 - (time.monotonic() - t0)))
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().numpy().tobytes())
    result = dict(rank=rank, lrs=lrs, ng=ng, steps=mon.step_count,
                  applied=[(a.step, a.version, a.phase, a.late) for a in mon.applied],
                  params=h.hexdigest(), stats=mon.stats())
    mon.close()
    dist.barrier()
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(result, f, default=str)


if __name__ == "__main__":
    main()
