#!/usr/bin/env python3
"""Step-time overhead and sketch time of spotter.torch.Monitor, against the
memory-bandwidth floor of the sketch, for a ViT on CUDA (ViT-Base size) or on
the CPU (a small ViT).

  PYTHONPATH=SITE python3 bench/gpu_overhead.py --device cuda --model vit-base \\
      --out gpu_overhead.json
  PYTHONPATH=SITE OMP_NUM_THREADS=1 python3 bench/gpu_overhead.py --device cpu \\
      --model small --out cpu_overhead.json

SITE is a directory where `import spotter` works (the client package with its
generated stubs, e.g. one made by client/python/tools/gen_stubs.py, see
docs/PERFORMANCE.md); torch, grpc and protobuf must be importable.

What it measures (docs/PERFORMANCE.md, "Sketch cost against the bandwidth
floor"):

  1. Step time without and with the Monitor: two copies of the model (same
     seed, same data), one driven by optimizer.step(), one by Monitor.step()
     (sketch every --sketch_every steps), interleaved in --rounds rounds of
     --steps steps after --warmup steps each, so load drifts hit both alike.
     Each step ends with a device synchronisation. Reported: the median step
     of each, the mean overhead, and the paired estimate (median sketch step
     minus median other step of the Monitor, over --sketch_every, over the
     plain median). On the CPU the process CPU time is the primary figure
     (the wall time of a shared machine mostly measures waiting for a core).
     No spotterd is needed: without --spotterd the Monitor's server is an
     unreachable address and it fails open (the uploads are still encoded and
     queued, then dropped); with --spotterd PATH a spotterd child process
     receives them.
  2. Sketch time: the taps alone on the plain model (spotter.torch.taps.Taps,
     the Monitor's hooks), forward+backward with and without capture plus
     collecting the rows on the device, alternated; the median difference is
     the sketch's compute per sketch step.
  3. The floor: the bytes the per-example sketch must read at least once (each
     tapped layer's input in the forward pass and its output gradient in the
     backward pass; per microbatch: every parameter gradient), divided by the
     device's memory bandwidth, measured here: CUDA, a device-to-device copy
     of --bw_mib MiB (bandwidth = 2 x bytes / time, read + write); CPU, the
     same with a host memcpy (torch copy_ on --threads threads).

Prints a table and writes --out (JSON): every figure, the command line, the
git commit of this checkout (`git rev-parse HEAD`, and whether the tree was
dirty), the device name, torch version and settings.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MODELS = {
    # name: image size, channels, patch, dim, depth, heads, mlp, classes
    "vit-base": dict(image=224, channels=3, patch=16, dim=768, depth=12, heads=12, mlp=3072,
                     classes=1000),
    # The example model of examples/torch_transformer.py (60,730 parameters
    # there), with its patch embedding as a Conv2d.
    "small": dict(image=28, channels=1, patch=7, dim=48, depth=3, heads=4, mlp=96, classes=10),
}


# The example's transformer block (attention through nn.Linear layers, so the
# per-example taps see qkv, proj, fc1, fc2).
sys.path.insert(0, os.path.join(REPO, "examples"))
from torch_transformer import Block  # noqa: E402
from torch_overhead import git_commit  # noqa: E402  (the commit and dirty flag it records)


class ViT(nn.Module):
    def __init__(self, image, channels, patch, dim, depth, heads, mlp, classes):
        super().__init__()
        n = (image // patch) ** 2
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


# ------------------------------------------------------------------ helpers
def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bandwidth(device, mib):
    """Bytes/s of a large copy (read + write: 2 x bytes per copy), best of 10."""
    n = mib * (1 << 20) // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(12):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * n * 4 / best


def med(xs):
    return statistics.median(xs) if xs else math.nan


# --------------------------------------------------------------- trainers
class Trainer:
    """Model, optimizer, fixed batch; with a Monitor when ``monitor`` is
    given (keyword arguments of Monitor)."""

    def __init__(self, args, device, monitor=None):
        from spotter.torch import Monitor
        torch.manual_seed(args.seed)
        self.device = device
        self.model = ViT(**MODELS[args.model]).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        cfg = MODELS[args.model]
        g = torch.Generator().manual_seed(args.seed)
        self.x = torch.randn(args.batch, cfg["channels"], cfg["image"], cfg["image"],
                             generator=g).to(device)
        self.y = torch.randint(0, cfg["classes"], (args.batch,), generator=g).to(device)
        self.autocast = args.autocast
        self.mon = Monitor(self.model, self.opt, **monitor) if monitor is not None else None

    def loss(self, x, y):
        if self.autocast == "none":
            return F.cross_entropy(self.model(x), y)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return F.cross_entropy(self.model(x), y)

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        if self.mon is None:
            self.loss(self.x, self.y).backward()
            self.opt.step()
            return
        loss = None
        for xb, yb in self.mon.microbatches(self.x, self.y):
            loss = self.loss(xb, yb) * (len(xb) / len(self.x))
            loss.backward()
        self.mon.step(loss)


def timed(trainer, device):
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    trainer.step()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def step_times(args, device, target):
    """Phase 1: interleaved plain / Monitor steps."""
    every = args.sketch_every
    plain = Trainer(args, device)
    mon = Trainer(args, device, monitor=dict(
        run=f"gpu-overhead-{os.getpid()}", server=target, total_steps=10**6, sample=args.sample,
        sketch_every=every, sketch_dim=args.sketch_dim, max_rows=args.batch,
        microbatches=args.microbatches, wait_for_server=5.0 if args.spotterd else 0.0,
        config={"sketch_rows": min(args.batch, 256), "eval_every": 50},
        session_options={"queue_size": 64}))
    series = {"plain": dict(wall=[], cpu=[], sketch=[]), "monitor": dict(wall=[], cpu=[], sketch=[])}
    try:
        for t in (plain, mon):
            for _ in range(args.warmup):
                t.step()
        for _ in range(args.rounds):
            for name, t in (("plain", plain), ("monitor", mon)):
                for _ in range(args.steps):
                    sk = t.mon is not None and t.mon.sketching()
                    w, c = timed(t, device)
                    series[name]["wall"].append(w)
                    series[name]["cpu"].append(c)
                    series[name]["sketch"].append(sk)
        stats = mon.mon.stats()
    finally:
        mon.mon.close(timeout=2)
    out = dict(steps_per_config=len(series["plain"]["wall"]),
               monitor_stats={k: v for k, v in stats.items() if k != "session"},
               session={k: stats.get("session", {}).get(k) for k in
                        ("enqueued", "sent", "dropped", "queued", "connected")
                        if k in stats.get("session", {})})
    for clock in ("wall", "cpu"):
        p, m, flags = series["plain"][clock], series["monitor"][clock], series["monitor"]["sketch"]
        sk = [x for x, f in zip(m, flags) if f]
        rest = [x for x, f in zip(m, flags) if not f]
        added = med(sk) - med(rest)
        out[clock] = dict(
            plain_median_ms=1e3 * med(p), plain_mean_ms=1e3 * statistics.fmean(p),
            monitor_median_ms=1e3 * med(m), monitor_mean_ms=1e3 * statistics.fmean(m),
            sketch_step_median_ms=1e3 * med(sk), other_step_median_ms=1e3 * med(rest),
            added_per_sketch_step_ms=1e3 * added,
            overhead_median=med(m) / med(p) - 1,
            overhead_mean=statistics.fmean(m) / statistics.fmean(p) - 1,
            other_step_overhead=med(rest) / med(p) - 1,
            paired_overhead=added / every / med(p),
            plain_steps_ms=[round(1e3 * x, 3) for x in p],
            monitor_steps_ms=[round(1e3 * x, 3) for x in m])
    out["sketch_flags"] = series["monitor"]["sketch"]
    return plain, out


def sketch_time(args, device, trainer):
    """Phase 2: the taps alone on ``trainer``'s model, capture on/off, and
    the bytes the sketch reads (the floor)."""
    from spotter.torch.taps import Taps
    model = trainer.model
    taps = Taps(model, args.seed, args.sketch_dim, args.sample)
    # Floor bytes: each tapped layer's input and output (= output gradient) once.
    seen = {}

    def record(layer):
        def hook(module, inputs, output):
            if layer.index not in seen:
                seen[layer.index] = (inputs[0].numel() * inputs[0].element_size()
                                     + output.numel() * output.element_size())
        return hook
    handles = [layer.module.register_forward_hook(record(layer)) for layer in taps.layers]

    def fb(capture):
        taps.begin_step(capture, False)
        model.zero_grad(set_to_none=True)
        if args.sample == "per_microbatch":
            for xb, yb in zip(trainer.x.tensor_split(args.microbatches),
                              trainer.y.tensor_split(args.microbatches)):
                (trainer.loss(xb, yb) * (len(xb) / len(trainer.x))).backward()
        else:
            trainer.loss(trainer.x, trainer.y).backward()
        if capture:
            taps.collect_rows(args.batch, to_host=False)
    on, off = dict(wall=[], cpu=[]), dict(wall=[], cpu=[])
    try:
        for _ in range(3):
            fb(True)
            fb(False)
        for h in handles:
            h.remove()
        for _ in range(args.taps_reps):
            for capture, acc in ((True, on), (False, off)):
                sync(device)
                c0, t0 = time.process_time(), time.perf_counter()
                fb(capture)
                sync(device)
                acc["wall"].append(time.perf_counter() - t0)
                acc["cpu"].append(time.process_time() - c0)
    finally:
        for h in handles:
            h.remove()
        taps.remove()
    if args.sample == "per_microbatch":
        floor_bytes = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    else:
        floor_bytes = sum(seen.values())
    return dict(
        tapped_layers=len(taps.layers), input_dim=taps.input_dim,
        sketched_fraction=taps.sketched_fraction, reps=args.taps_reps,
        floor_bytes=floor_bytes,
        param_grad_bytes=sum(p.numel() * 4 for p in model.parameters() if p.requires_grad),
        **{f"{clock}_{k}": v for clock in ("wall", "cpu") for k, v in dict(
            capture_median_ms=1e3 * med(on[clock]), no_capture_median_ms=1e3 * med(off[clock]),
            sketch_ms=1e3 * (med(on[clock]) - med(off[clock]))).items()})


# -------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--model", choices=sorted(MODELS), default=None,
                    help="[vit-base on cuda, small on cpu]")
    ap.add_argument("--batch", type=int, default=None, help="[64 for vit-base on cuda, else 64]")
    ap.add_argument("--sample", choices=["per_example", "per_microbatch"], default="per_example")
    ap.add_argument("--sketch_every", type=int, default=10)
    ap.add_argument("--sketch_dim", type=int, default=256)
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50, help="timed steps per round and config "
                    "(a multiple of --sketch_every)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--taps_reps", type=int, default=20, help="capture on/off pairs in phase 2")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    ap.add_argument("--autocast", choices=["none", "bf16"], default="none")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA)")
    ap.add_argument("--project", choices=["auto", "dense", "scatter"], default="auto",
                    help="how the per-example taps project (spotter.torch.taps.PROJECT)")
    ap.add_argument("--bw_mib", type=int, default=None, help="copy size for the bandwidth "
                    "[1024 on cuda, 256 on cpu]")
    ap.add_argument("--spotterd", help="a spotterd binary to upload to (else none: fail-open)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON result file")
    args = ap.parse_args()
    if args.steps % args.sketch_every:
        ap.error("--steps must be a multiple of --sketch_every")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    args.model = args.model or ("vit-base" if args.device == "cuda" else "small")
    args.batch = args.batch or 64
    args.bw_mib = args.bw_mib or (1024 if args.device == "cuda" else 256)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    try:
        import spotter.torch.taps as taps_module
        from spotter.torch import Monitor  # noqa: F401  (fails here, not mid-run)
        import spotter.session  # noqa: F401
    except ImportError as e:
        sys.exit(f"gpu_overhead.py: cannot import spotter ({e}); set PYTHONPATH to a directory "
                 "holding the spotter package and its generated stubs (docs/PERFORMANCE.md)")
    if hasattr(taps_module, "PROJECT"):
        taps_module.PROJECT = args.project
    elif args.project != "auto":
        sys.exit("gpu_overhead.py: this spotter has no spotter.torch.taps.PROJECT")
    device = torch.device(args.device)

    server = None
    target = "127.0.0.1:9"  # nothing listens: the Monitor fails open
    if args.spotterd:
        from spotter.testing import Spotterd
        server = Spotterd(args.spotterd)
        target = server.target
    result = dict(
        command=" ".join([os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:]),
        argv=sys.argv, git=git_commit(), device=args.device, device_name=device_name(device),
        torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
        threads=torch.get_num_threads(), model=args.model, model_config=MODELS[args.model],
        batch=args.batch, sample=args.sample, sketch_every=args.sketch_every,
        sketch_dim=args.sketch_dim, autocast=args.autocast, project=args.project,
        tf32=bool(args.device == "cuda" and torch.backends.cuda.matmul.allow_tf32),
        cudnn_tf32=bool(args.device == "cuda" and torch.backends.cudnn.allow_tf32),
        spotterd=bool(args.spotterd), spotter_package=os.path.dirname(taps_module.__file__),
        load_average_before=os.getloadavg(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        bw = bandwidth(device, args.bw_mib)
        plain, result["steps"] = step_times(args, device, target)
        result["params"] = sum(p.numel() for p in plain.model.parameters())
        result["taps"] = sketch_time(args, device, plain)
    finally:
        if server is not None:
            server.stop()
    result["load_average_after"] = os.getloadavg()
    t = result["taps"]
    result["bandwidth_gb_s"] = bw / 1e9
    result["floor_ms"] = 1e3 * t["floor_bytes"] / bw
    clock = "wall" if args.device == "cuda" else "cpu"
    result["primary_clock"] = clock
    result["sketch_over_floor"] = t[f"{clock}_sketch_ms"] / result["floor_ms"]
    s = result["steps"][clock]

    print(f"{result['device_name']}, torch {result['torch']}, {args.model} "
          f"({result['params']:,} parameters), batch {args.batch}, {args.sample}, "
          f"k = {args.sketch_dim}, sketch every {args.sketch_every}; {clock} time "
          f"({'synchronised wall clock' if clock == 'wall' else 'process CPU time, all threads'})")
    rows = [
        ("plain step, median", f"{s['plain_median_ms']:.2f} ms"),
        ("Monitor step, median (all steps)", f"{s['monitor_median_ms']:.2f} ms "
         f"({s['overhead_median']:+.2%})"),
        ("Monitor, mean over all steps", f"{s['monitor_mean_ms']:.2f} ms vs {s['plain_mean_ms']:.2f}"
         f" ({s['overhead_mean']:+.2%})"),
        ("Monitor non-sketch step, median", f"{s['other_step_median_ms']:.2f} ms "
         f"({s['other_step_overhead']:+.2%})"),
        ("Monitor sketch step, median", f"{s['sketch_step_median_ms']:.2f} ms"),
        ("added per sketch step (paired)", f"{s['added_per_sketch_step_ms']:.2f} ms"),
        (f"paired overhead at sketch_every={args.sketch_every}", f"{s['paired_overhead']:+.2%}"),
        ("sketch time, taps alone", f"{t[f'{clock}_sketch_ms']:.2f} ms per sketch step"),
        ("bytes the sketch reads", f"{t['floor_bytes'] / 2**20:.1f} MiB "
         f"({t['tapped_layers']} tapped layers)"),
        ("memory bandwidth (copy, read+write)", f"{result['bandwidth_gb_s']:.1f} GB/s"),
        ("bandwidth floor of the sketch", f"{result['floor_ms']:.3f} ms"),
        ("sketch time / floor", f"{result['sketch_over_floor']:.1f}x"),
    ]
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"  {a:<{w}}  {b}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
