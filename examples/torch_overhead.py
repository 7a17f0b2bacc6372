#!/usr/bin/env python3
"""Overhead of spotter.torch.Monitor on the example model (the small ViT of
examples/torch_transformer.py, Fashion-MNIST-shaped batches, CPU).

  examples/torch_overhead.py --spotterd build-py/server/spotterd \
      --steps 60 --rounds 5 --out docs/perf/overhead.json

The result records the command, the git commit of this checkout (and whether
its tracked files had changes), the torch version and where spotter was
imported from.

Step time: every configuration keeps its own model, optimizer and Monitor (one
run each on one live spotterd); configurations are interleaved in `rounds`
rounds of `steps` timed steps (after warm-up, `steps` a multiple of 10 so every
round holds whole sketch periods), so a load change on the machine hits all of
them alike. Per step it records the wall time and the process CPU time (all
threads: the session's sender thread included), and reports the mean over all
steps (sketch steps included: the added time per step on average) and the
median, each with its overhead over the plain loop; for every_10 also the
paired estimate: (median sketch step - median other step of the same Monitor)
/ 10, over the plain loop's median step. On a shared machine the CPU
time is the robust measure: wall time also counts waiting for a core. A
configuration "stalled" repeats per-example/every-10 with its server frozen
(SIGSTOP): uploads queue, the step must not wait for the network.

Peak memory (--memory): each configuration runs alone in a fresh process:
after the model and data exist, VmRSS is read and the peak (VmHWM) reset
(/proc/self/clear_refs), then the Monitor is built and `steps` steps run; the
report gives the median over --memory_repeats processes of the peak increase
over that baseline, and its difference to the plain loop's.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torch_transformer import ViT  # noqa: E402

CONFIGS = {
    "plain": None,
    "per_example/every_10": ("per_example", 10),
    "per_example/every_1": ("per_example", 1),
    "per_microbatch/every_10": ("per_microbatch", 10),
    "per_microbatch/every_1": ("per_microbatch", 1),
}


class Trainer:
    """One configuration: model, optimizer, optional Monitor, fixed data."""

    def __init__(self, name, server, batch, seed=0):
        from spotter.torch import Monitor
        torch.manual_seed(seed)
        self.name = name
        self.model = ViT()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 28, 28, generator=g)
        self.y = torch.randint(0, 10, (batch,), generator=g)
        self.mon = None
        cfg = CONFIGS[name.replace("stalled:", "")]
        if cfg is not None:
            sample, every = cfg
            self.mon = Monitor(self.model, self.opt, run=f"overhead-{name.replace('/', '-').replace(':', '-')}-{os.getpid()}",
                               server=server, total_steps=10**6, sample=sample, sketch_every=every,
                               sketch_dim=256, max_rows=batch, microbatches=4,
                               config={"sketch_rows": 64, "eval_every": 50},
                               session_options={"queue_size": 64})

    def step(self):
        self.opt.zero_grad()
        if self.mon is None:
            loss = F.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
            return
        for xb, yb in self.mon.microbatches(self.x, self.y):
            loss = F.cross_entropy(self.model(xb), yb) * (len(xb) / len(self.x))
            loss.backward()
        self.mon.step(loss)

    def close(self):
        if self.mon is not None:
            self.mon.close(timeout=2)


def timing(args):
    from spotter.testing import Spotterd
    server = Spotterd(args.spotterd)
    stalled_server = Spotterd(args.spotterd)
    names = list(CONFIGS) + ["stalled:per_example/every_10"]
    trainers = {n: Trainer(n, stalled_server.target if n.startswith("stalled") else server.target,
                           args.batch) for n in names}
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    sketch_step = {n: [] for n in names}  # was this timed step a sketch step?
    try:
        for t in trainers.values():  # warm-up (also fills caches, hashes)
            for _ in range(10):
                t.step()
        os.kill(stalled_server.proc.pid, signal.SIGSTOP)
        for r in range(args.rounds):
            for n, t in trainers.items():
                for _ in range(args.steps):
                    sketch_step[n].append(t.mon is not None and t.mon.sketching())
                    t0, c0 = time.perf_counter(), time.process_time()
                    t.step()
                    times[n].append(time.perf_counter() - t0)
                    cpu[n].append(time.process_time() - c0)
        stalled_stats = trainers["stalled:per_example/every_10"].mon.stats()
    finally:
        os.kill(stalled_server.proc.pid, signal.SIGCONT)
        for t in trainers.values():
            t.close()
        server.stop()
        stalled_server.stop()
    out = {}
    for n in names:
        row = dict(steps=len(times[n]))
        for label, series in (("wall", times), ("cpu", cpu)):
            mean, med = statistics.fmean(series[n]), statistics.median(series[n])
            row[f"{label}_mean_ms"] = 1e3 * mean
            row[f"{label}_median_ms"] = 1e3 * med
            row[f"{label}_overhead_mean"] = mean / statistics.fmean(series["plain"]) - 1
            row[f"{label}_overhead_median"] = med / statistics.median(series["plain"]) - 1
            # Paired in time: sketch steps against the same Monitor's other
            # steps, which ran between them (load drifts cancel). The added
            # cost per sketch step, spread over the sketch period, relative
            # to the plain loop's median step.
            sk = [x for x, f in zip(series[n], sketch_step[n]) if f]
            rest = [x for x, f in zip(series[n], sketch_step[n]) if not f]
            if sk and rest:
                every = CONFIGS[n.replace("stalled:", "")][1]
                added = statistics.median(sk) - statistics.median(rest)
                row[f"{label}_sketch_step_median_ms"] = 1e3 * statistics.median(sk)
                row[f"{label}_other_step_median_ms"] = 1e3 * statistics.median(rest)
                row[f"{label}_added_per_sketch_step_ms"] = 1e3 * added
                row[f"{label}_paired_overhead"] = added / every / statistics.median(series["plain"])
        out[n] = row
    out["stalled:per_example/every_10"]["session"] = {
        k: stalled_stats["session"][k] for k in ("enqueued", "dropped", "queued", "connected")}
    return out


def _status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(args):
    """Runs one configuration alone; prints its peak RSS increase (KiB)."""
    import gc
    from spotter.torch import Monitor  # noqa: F401  (imports done before the baseline)
    torch.manual_seed(0)
    base_model = ViT()
    del base_model
    gc.collect()
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    t = Trainer(args.memory_child, args.target, args.batch)
    for _ in range(args.steps):
        t.step()
    peak = _status_kib("VmHWM")
    t.close()
    print(json.dumps({"baseline_kib": base, "peak_kib": peak, "peak_increase_kib": peak - base}))


def memory(args):
    from spotter.testing import Spotterd
    server = Spotterd(args.spotterd)
    out = {}
    try:
        for n in CONFIGS:
            runs = []
            for _ in range(args.memory_repeats):
                r = subprocess.run([sys.executable, __file__, "--spotterd", args.spotterd,
                                    "--memory_child", n, "--target", server.target,
                                    "--steps", str(args.steps), "--batch", str(args.batch)],
                                   capture_output=True, text=True, check=True)
                runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
            out[n] = dict(peak_increase_kib=statistics.median(x["peak_increase_kib"] for x in runs),
                          runs=[x["peak_increase_kib"] for x in runs])
    finally:
        server.stop()
    base = out["plain"]["peak_increase_kib"]
    for n in out:
        out[n]["added_over_plain_mib"] = (out[n]["peak_increase_kib"] - base) / 1024
    return out


def git_commit():
    """{"commit": HEAD of this checkout, "dirty": tracked files changed}."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", HERE, *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return dict(commit=git("rev-parse", "HEAD") or "unknown",
                dirty=bool(git("status", "--porcelain", "--untracked-files=no")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spotterd", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--memory_repeats", type=int, default=3,
                    help="fresh processes per configuration; the median is reported")
    ap.add_argument("--memory_child")
    ap.add_argument("--target")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    import spotter
    result = dict(command=" ".join(["examples/torch_overhead.py"] + sys.argv[1:]),
                  git=git_commit(), spotter_package=os.path.dirname(spotter.__file__),
                  load_average_before=os.getloadavg(), torch=torch.__version__,
                  threads=args.threads, batch=args.batch)
    result["timing"] = timing(args)
    if args.memory:
        result["memory"] = memory(args)
    result["load_average_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
