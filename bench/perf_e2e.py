#!/usr/bin/python3
"""End-to-end performance of spotterd: the whole set in one run.

Runs, against the real spotterd of BUILD_DIR on loopback (docs/PERFORMANCE.md,
"End to end"):

  1. ingest throughput at 8 KiB, 64 KiB, 256 KiB and 1 MiB messages, with the
     null-gRPC ceiling and the in-process core ingest rate measured in the same
     run (spotter_load --target=null, --core_only): the ratio
     spotterd / min(null, core) per size;
  2. directive and evaluation latency with 64 streams at half the measured
     throughput;
  3. scaling curves: throughput and server CPU per row against k, l, rows per
     message, runs (idle runs plus 100 active) and ranks per run, and resident
     memory per idle run against the 2*l*k*4 B + 256 KiB budget;
  4. the alternatives (bench/alternatives.sh: a NumPy Frequent Directions
     peer, and the exact k x k covariance), when present.

Writes OUT_DIR/results.json (every raw figure, plus the machine) and PNG plots
of the curves in OUT_DIR. About 10 minutes on 2 cores; --smoke runs every
step with tiny sizes and durations (seconds, for CI: checks the tools work,
not their speed).

  /usr/bin/python3 bench/perf_e2e.py BUILD_DIR OUT_DIR [--smoke] [--only STEP,...]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

KIB = 1024


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


class Bench:
    def __init__(self, build, out, smoke):
        self.load = os.path.join(build, "bench", "spotter_load")
        self.spotterd = os.path.join(build, "server", "spotterd")
        self.out = out
        self.smoke = smoke
        self.seconds = 0.5 if smoke else 5.0

    def run(self, *flags, seconds=None):
        """One spotter_load run; returns its JSON report (raises on FAIL)."""
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            report = f.name
        cmd = [self.load, f"--seconds={seconds or self.seconds}", f"--report={report}",
               *flags]
        if "--core_only" not in flags and "--target=null" not in flags:
            cmd.append(f"--spotterd={self.spotterd}")
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in p.stdout.splitlines() if l.startswith("spotter_load:")]
        print("  $ " + " ".join(os.path.relpath(c) if c.startswith("/") else c for c in cmd[:1])
              + " " + " ".join(cmd[1:]).replace(report, "R.json"), flush=True)
        for l in lines:
            if "PASS" not in l:
                print("    " + l[len("spotter_load: "):], flush=True)
        if p.returncode != 0:
            sys.stderr.write(p.stdout + p.stderr)
            raise SystemExit(f"perf_e2e: spotter_load failed ({p.returncode}): {' '.join(cmd)}")
        with open(report) as f:
            r = json.load(f)
        os.unlink(report)
        r["wall_s"] = round(time.time() - t0, 2)
        r["flags"] = list(flags)
        return r


def rows_for(size, dim):
    return max(1, size // (4 * dim))


def throughput(b, res):
    dim, l = 256, 64
    sizes = [8 * KIB] if b.smoke else [8 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB]
    table = []
    for size in sizes:
        rows = rows_for(size, dim)
        common = [f"--rows={rows}", f"--dim={dim}", f"--sketch_rows={l}"]
        streams = ["--streams=16", "--runs=4", "--window=8", "--override_ms=0"]
        print(f"== throughput, {size // KIB} KiB messages ({rows} rows x k={dim})", flush=True)
        core = b.run("--core_only", *common)
        null = b.run("--target=null", *common, *streams)
        spot = b.run(*common, *streams)
        # The same without evaluations (one per 10^6 steps): ingest alone.
        ingest = b.run(*common, *streams, "--eval_every=1000000")
        ceiling = min(null["rows_per_s"], core["rows_per_s"])
        # Client, transport and server share the machine's cores, so the
        # costs add: the CPU spotterd spends per row against the core's plus
        # the null service's is the efficiency independent of the load
        # generator.
        base_cpu = core["cpu_us_per_row"] + null["cpu_us_per_row"]
        row = {"message_bytes": size, "rows": rows, "core": core, "null": null,
               "spotterd": spot, "spotterd_ingest_only": ingest,
               "ratio": spot["rows_per_s"] / ceiling,
               "ratio_ingest_only": ingest["rows_per_s"] / ceiling,
               "cpu_efficiency": base_cpu / spot["cpu_us_per_row"],
               "cpu_efficiency_ingest_only": base_cpu / ingest["cpu_us_per_row"],
               "bound": "null" if null["rows_per_s"] < core["rows_per_s"] else "core"}
        table.append(row)
        print(f"   spotterd {spot['rows_per_s']:.0f} rows/s ({ingest['rows_per_s']:.0f} without "
              f"evaluations), null {null['rows_per_s']:.0f}, core {core['rows_per_s']:.0f}: "
              f"ratio {row['ratio']:.2f} ({row['ratio_ingest_only']:.2f}; bound: {row['bound']}); "
              f"CPU per row {spot['cpu_us_per_row']:.1f} us ({ingest['cpu_us_per_row']:.1f}) "
              f"against core + null {base_cpu:.1f}: efficiency {row['cpu_efficiency']:.2f} "
              f"({row['cpu_efficiency_ingest_only']:.2f})", flush=True)
    res["throughput"] = table


def latency(b, res):
    # 64 streams over 8 runs at half the throughput measured at 8 KiB.
    t = res.get("throughput")
    dim = 256
    rows = rows_for(8 * KIB, dim)
    if t:
        full = t[0]["spotterd"]["uploads_per_s"]
    else:
        full = b.run(f"--rows={rows}", f"--dim={dim}", "--streams=64", "--runs=8",
                     "--override_ms=0")["uploads_per_s"]
    streams = 64
    step_ms = streams / (0.5 * full) * 1000.0
    print(f"== latency: 64 streams at half of {full:.0f} uploads/s (one upload per stream "
          f"every {step_ms:.1f} ms)", flush=True)
    r = b.run(f"--rows={rows}", f"--dim={dim}", f"--streams={streams}", "--runs=8", "--watch",
              f"--step_ms={step_ms:.3f}", "--override_ms=100",
              seconds=1 if b.smoke else 20)
    r["target_uploads_per_s"] = 0.5 * full
    res["latency"] = r


def scaling(b, res):
    curves = {}
    quick = b.smoke
    pick = (lambda v: v[-1:] if v[0] == 0 else v[:1]) if quick else (lambda v: v)
    base = ["--streams=8", "--runs=2", "--window=8", "--override_ms=0"]

    def curve(name, values, flags_of):
        print(f"== scaling in {name}", flush=True)
        pts = []
        for v in pick(values):
            r = b.run(*flags_of(v), seconds=0.5 if quick else 4)
            r["x"] = v
            pts.append(r)
        curves[name] = pts

    curve("k", [64, 128, 256, 512, 1024],
          lambda k: [f"--dim={k}", "--sketch_rows=32", "--rows=64", *base])
    curve("l", [16, 32, 64, 128],
          lambda l: ["--dim=512", f"--sketch_rows={l}", "--rows=64", *base])
    curve("rows_per_message", [1, 4, 16, 64, 256],
          lambda m: ["--dim=256", "--sketch_rows=64", f"--rows={m}", *base])
    curve("ranks_per_run", [1, 4, 16, 64, 256],
          lambda n: ["--dim=256", "--sketch_rows=64", "--rows=64", f"--streams={n}",
                     "--runs=1", "--window=8", "--override_ms=0"])
    # Idle runs (each holding one rank's sketch) plus 100 active single-rank
    # runs; the RSS difference per idle run against the budget.
    curve("idle_runs", [0, 100] if quick else [0, 100, 1000, 10000],
          lambda n: ["--dim=256", "--sketch_rows=64", "--rows=64", "--streams=100",
                     "--runs=100", "--window=4", "--override_ms=0", f"--idle_runs={n}",
                     "--spotterd_args=--max_runs=20000"])
    for p in curves["idle_runs"]:
        n = p["x"]
        if n:
            p["rss_per_idle_run_kib"] = (p["rss_after_idle_mb"] - p["rss_before_idle_mb"]) * 1024 / n
    budget = 2 * 64 * 256 * 4 + 256 * KIB
    res["memory_budget_per_run_kib"] = budget / KIB
    res["scaling"] = curves


def alternatives(b, res, build):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alternatives.sh")
    if not os.path.exists(script):
        print("== alternatives: bench/alternatives.sh not present, skipped", flush=True)
        return
    print("== alternatives (bench/alternatives.sh)", flush=True)
    env = dict(os.environ)
    if b.smoke:
        env["ALTERNATIVES_SMOKE"] = "1"
    alt_dir = os.path.join(b.out, "alternatives")
    os.makedirs(alt_dir, exist_ok=True)
    subprocess.run(["bash", script, build, alt_dir], check=True, env=env)
    path = os.path.join(alt_dir, "alternatives.json")
    if os.path.exists(path):
        with open(path) as f:
            res["alternatives"] = json.load(f)


def plots(res, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("perf_e2e: matplotlib missing, no plots", flush=True)
        return
    if "throughput" in res:
        t = res["throughput"]
        x = [p["message_bytes"] / KIB for p in t]
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        for key, label in (("spotterd", "spotterd"), ("null", "null gRPC (ceiling)"),
                           ("core", "core in-process")):
            ax[0].plot(x, [p[key]["rows_per_s"] for p in t], "o-", label=label)
        ax[0].plot(x, [p["spotterd_ingest_only"]["rows_per_s"] for p in t], "o--",
                   label="spotterd, no evaluations")
        ax[0].set(xscale="log", yscale="log", xlabel="message size (KiB)", ylabel="rows/s",
                  title="ingest throughput (k=256, l=64)")
        ax[0].legend()
        ax[1].plot(x, [p["ratio"] for p in t], "o-", label="rows/s ratio")
        ax[1].plot(x, [p["ratio_ingest_only"] for p in t], "o--", label="rows/s, no evaluations")
        ax[1].plot(x, [p["cpu_efficiency"] for p in t], "s-", label="CPU/row efficiency")
        ax[1].axhline(0.7, ls="--", c="gray", label="goal 0.7")
        ax[1].set(xscale="log", xlabel="message size (KiB)", ylim=(0, 1.2),
                  ylabel="spotterd / min(null, core)", title="ratio to the ceiling")
        ax[1].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "throughput.png"), dpi=110)
        plt.close(fig)
    if "scaling" in res:
        curves = res["scaling"]
        fig, axes = plt.subplots(2, len(curves), figsize=(4 * len(curves), 7))
        for i, (name, pts) in enumerate(curves.items()):
            x = [max(p["x"], 0.5) if name == "idle_runs" else p["x"] for p in pts]
            axes[0][i].plot(x, [p["rows_per_s"] for p in pts], "o-")
            axes[0][i].set(xscale="log", title=name, ylabel="rows/s")
            axes[1][i].plot(x, [p["cpu_us_per_row"] for p in pts], "o-", c="C1")
            axes[1][i].set(xscale="log", xlabel=name, ylabel="server CPU us/row")
            axes[1][i].set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "scaling.png"), dpi=110)
        plt.close(fig)
    alt = res.get("alternatives")
    if alt:
        sweep = [a for a in alt if a.get("group") == "sweep"]
        if sweep:
            fig, ax = plt.subplots(1, 2, figsize=(10, 4))
            for mode in sorted({a["mode"] for a in sweep}):
                pts = sorted((a for a in sweep if a["mode"] == mode), key=lambda a: a["k"])
                ax[0].plot([a["k"] for a in pts], [a["rows_per_s"] for a in pts], "o-",
                           label=mode)
                ax[1].plot([a["k"] for a in pts], [a["peak_rss_or_state_bytes"] / 2**20 for a in pts],
                           "o-", label=mode)
            ax[0].set(xscale="log", yscale="log", xlabel="k", ylabel="rows/s (with evaluations)")
            ax[1].set(xscale="log", yscale="log", xlabel="k", ylabel="state (MiB)")
            ax[0].legend()
            ax[1].legend()
            fig.tight_layout()
            fig.savefig(os.path.join(out, "alternatives.png"), dpi=110)
            plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", help="the CMake build directory (with bench/spotter_load)")
    ap.add_argument("out", help="where results.json and the plots go")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes and durations: checks the tools, not the speed")
    ap.add_argument("--only", default="throughput,latency,scaling,alternatives",
                    help="comma-separated steps to run")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    b = Bench(os.path.abspath(a.build), os.path.abspath(a.out), a.smoke)
    res = {"machine": machine(), "smoke": a.smoke}
    t0 = time.time()
    steps = a.only.split(",")
    if "throughput" in steps:
        throughput(b, res)
    if "latency" in steps:
        latency(b, res)
    if "scaling" in steps:
        scaling(b, res)
    if "alternatives" in steps:
        alternatives(b, res, os.path.abspath(a.build))
    res["wall_seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    plots(res, a.out)
    print(f"perf_e2e: {res['wall_seconds']} s; results in {a.out}/results.json", flush=True)


if __name__ == "__main__":
    main()
