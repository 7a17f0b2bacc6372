"""One rank of a job that uses the plain session API (no torch): the restart
test of tests/python/test_session_restart.py.

Usage: session_worker.py SERVER RUN RANK WORLD STEPS CKPT_EVERY CKPT PROGRESS OUT [RESUME]

Uploads a sketch of random rows every step, without an LR (the trainer has
none of its own: it follows the directives), paced to ~100 steps/s. After
every CKPT_EVERY-th step it writes its checkpoint (the next step and
RunSession.checkpoint()) to CKPT atomically; after every step it writes the
step to PROGRESS. With RESUME (a checkpoint file) it resumes from it. At the
end it writes OUT (JSON): for each step it ran, the LR and optimizer of the
directive in force, and how many uploads the session took.
"""
import json
import os
import sys
import time

import numpy as np

from spotter import RunSession

CONFIG = {"total_steps": 100_000, "peak_lr": 0.1, "sketch_dim": 16, "sketch_rows": 8,
          "eval_every": 5, "world_size": 2,
          # Automatic control never fires here: the test places the switch.
          "phase": {"min_dwell_steps": 1_000_000, "warmup_fraction": 0.001,
                    "delivery_budget_seconds": 0.2}}


def write_atomically(path, data: bytes):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def main():
    server, run, rank, world, steps, every, ckpt, progress, out = sys.argv[1:10]
    rank, world, steps, every = int(rank), int(world), int(steps), int(every)
    resume = None
    start = 0
    if len(sys.argv) > 10:
        with open(sys.argv[10], "rb") as f:
            saved = json.loads(f.read())
        start, resume = saved["step"], bytes.fromhex(saved["session"])
    s = RunSession(server, run, dict(CONFIG, world_size=world), rank=rank, resume=resume)
    record, uploads = {}, 0
    # SPOTTER_TEST_HOLD="STEP:PATH,...": before STEP, wait until PATH exists
    # (the test places its switch, or kills the process, at a known step
    # instead of racing a pace of 100 steps/s).
    holds = dict(h.split(":", 1) for h in os.environ.get("SPOTTER_TEST_HOLD", "").split(",") if h)
    for step in range(start, steps):
        gate = holds.get(str(step))
        while gate and not os.path.exists(gate):
            time.sleep(0.005)
        t0 = time.monotonic()
        rows = np.random.default_rng([rank, step]).standard_normal((4, 16)).astype(np.float32)
        uploads += s.upload_sketch(step, rows, loss=1.0 / (1 + step))  # no lr
        d = s.directive_at(step)
        record[step] = [s.lr_at(step), d.optimizer.kind if d else None]
        if (step + 1) % every == 0:
            write_atomically(ckpt, json.dumps(
                {"step": step + 1, "session": s.checkpoint(step + 1).hex()}).encode())
        write_atomically(progress, str(step).encode())
        time.sleep(max(0.0, 0.01 - (time.monotonic() - t0)))
    flushed = s.flush(30.0)
    stats = s.stats()
    s.close()
    with open(out, "w") as f:
        json.dump({"record": record, "uploads": uploads, "flushed": flushed,
                   "rejects": stats.rejects, "incarnation": s.incarnation}, f)


if __name__ == "__main__":
    main()
