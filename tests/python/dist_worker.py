"""One rank of the distributed tests (test_distributed.py, test_restart_job.py).

Usage: dist_worker.py RANK WORLD MASTER_PORT SERVER RUN OUT_JSON STEPS [options]

Trains a DDP MLP on digits with the gloo backend under spotter.torch.Monitor,
paced to at most --rate steps/s so that the server's effective-step margin
stays inside the run, and writes what it applied (per-step LR and optimizer,
the directive switches, a hash of the final parameters, the counters) to
OUT_JSON. The controller is held (it never switches on its own): the tests
place every switch with an operator override.

Restarts: with --ckpt-dir and --ckpt-every C, rank 0 saves a torch checkpoint
(model, optimizer, data generator, Monitor.state_dict()) after every C-th
step as ckpt-<step>.pt, and every rank saves what it recorded so far as
rec-<rank>-<step>.json. With --resume STEP both ranks load rank 0's
ckpt-STEP.pt (rank 0 through Monitor.load_state_dict(), the others through
Monitor(resume=...)) and their own records, and go on from STEP.
--progress: a file the rank rewrites with its step count after every step.
--apply hooks: the loop steps the optimizer itself, DirectiveLR(opt, monitor)
sets the LR, and Monitor.on_step_end() ends each step (no resume then).
"""
import argparse
import datetime
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
from spotter.torch import DirectiveLR, Monitor  # noqa: E402


def write_atomically(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def parse():
    p = argparse.ArgumentParser()
    for name in ("rank", "world", "port", "server", "run", "out", "steps"):
        p.add_argument(name)
    p.add_argument("--upload", default="rank0")
    p.add_argument("--directives", default=None)
    p.add_argument("--sync-every", type=int, default=None)
    p.add_argument("--sketch-every", type=int, default=2)
    p.add_argument("--rate", type=float, default=150.0)
    p.add_argument("--budget", type=float, default=0.5, help="delivery_budget_seconds")
    p.add_argument("--warmup", type=float, default=0.0, help="warmup_fraction (0: default)")
    p.add_argument("--apply", default="step", help="step, or hooks (with DirectiveLR)")
    p.add_argument("--close-timeout", type=float, default=10.0)
    p.add_argument("--ckpt-dir", default=None)
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--resume", type=int, default=None)
    p.add_argument("--progress", default=None)
    return p.parse_args()


def main():
    a = parse()
    rank, world, steps = int(a.rank), int(a.world), int(a.steps)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=a.port)
    # Bounded collectives: a rank that waits for a dead peer fails instead of hanging.
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)  # same initial weights everywhere (DDP also broadcasts)
    train, _ = digits.load()
    model = torch.nn.parallel.DistributedDataParallel(digits.mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    lrs, ng = [], []
    saved = None
    kw = dict(directives=a.directives) if a.directives else {}
    if a.resume is not None:
        saved = torch.load(os.path.join(a.ckpt_dir, f"ckpt-{a.resume}.pt"))
        if rank != 0:
            kw["resume"] = saved["spotter"]
    # Built as in the first run: before the optimizer's state is loaded (the
    # run's peak_lr defaults to the optimizer's LR now).
    mon = Monitor(model, opt, run=a.run, server=a.server, total_steps=steps,
                  sketch_every=a.sketch_every, sync_every=a.sync_every, sketch_dim=64,
                  upload=a.upload, wait_for_server=10, apply=a.apply,
                  session_options={"backoff_initial": 0.05, "backoff_max": 0.5},
                  config={"sketch_rows": 16, "eval_every": 10,
                          "phase": {"delivery_budget_seconds": a.budget,
                                    "warmup_fraction": a.warmup,
                                    "kfac_factor_interval": 3, "kfac_inverse_interval": 9,
                                    "min_dwell_steps": 1_000_000}}, **kw)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        if rank == 0:
            mon.load_state_dict(saved["spotter"])  # the torch convention
        with open(os.path.join(a.ckpt_dir, f"rec-{rank}-{a.resume}.json")) as f:
            rec = json.load(f)
        lrs, ng = rec["lrs"], rec["ng"]
    assert mon.step_count == (a.resume or 0)
    sched = DirectiveLR(opt, mon) if a.apply == "hooks" else None
    while mon.step_count < steps and not mon.should_stop:
        t0 = time.monotonic()
        idx = torch.randint(0, len(train[0]), (64,), generator=gen)[rank::world]
        opt.zero_grad()
        loss = F.cross_entropy(model(train[0][idx]), train[1][idx])
        loss.backward()
        if sched is None:
            mon.step(loss)
            lrs.append(opt.param_groups[0]["lr"])
        else:  # the trainer steps the optimizer; DirectiveLR sets the LR
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            mon.on_step_end(loss)
        ng.append(mon.natural_gradient)
        t = mon.step_count
        if a.ckpt_every and t % a.ckpt_every == 0:
            write_atomically(os.path.join(a.ckpt_dir, f"rec-{rank}-{t}.json"),
                             json.dumps({"lrs": lrs, "ng": ng}))
            if rank == 0:
                path = os.path.join(a.ckpt_dir, f"ckpt-{t}.pt")
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                            "gen": gen.get_state(), "spotter": mon.state_dict()}, path + ".tmp")
                os.replace(path + ".tmp", path)
        if a.progress:
            write_atomically(a.progress, str(t))
        time.sleep(max(0.0, 1 / a.rate - (time.monotonic() - t0)))
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().numpy().tobytes())
    flushed = mon.flush(a.close_timeout)
    stats = mon.stats()
    result = dict(rank=rank, lrs=lrs, ng=ng, steps=mon.step_count, flushed=flushed,
                  applied=[(x.step, x.version, x.phase, x.late) for x in mon.applied],
                  params=h.hexdigest(), stats=stats,
                  incarnation=mon.session.incarnation if mon.session else None)
    mon.close(timeout=a.close_timeout)
    dist.barrier()
    dist.destroy_process_group()
    with open(a.out, "w") as f:
        json.dump(result, f, default=str)


if __name__ == "__main__":
    main()
