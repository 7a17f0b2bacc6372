#!/usr/bin/python3
"""How long a Connect message holds its gRPC callback thread in spotterd.

spotterd applies an upload on the reactor thread that read it (Run::Ingest),
including the Frequent Directions shrink when the rank's buffer fills. This
measures what that costs the other streams: for each sketch dimension k, a
spotterd on loopback takes the load of `spotter_load` (docs/PERFORMANCE.md,
section 1 shape: 16 streams over 4 runs, 64-row batches, 8 unacknowledged per
stream), and the per-message handling histogram
(spotter_rpc_duration_seconds{method="Connect"}) is read from /metrics after it.
Each k runs twice: saturated (every stream sends as fast as its window of
unacknowledged uploads allows), then paced at half the saturated rate (each
stream one batch every --step_ms, derived from the first run), where a
directive's delay comes from the reactor threads rather than a full CPU.
Printed per run: messages, mean handling time, the share of messages held past
each bucket bound, and directive latency at every stream from spotter_load.

    /usr/bin/python3 bench/reactor_hold.py build [--seconds 10] [--dims 256,1024,4096]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request


def start_spotterd(build, tmp):
    ports = os.path.join(tmp, "ports")
    proc = subprocess.Popen(
        [os.path.join(build, "server", "spotterd"), "--listen", "127.0.0.1:0",
         "--metrics_listen", "127.0.0.1:0", "--port_file", ports],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "spotterd.log"), "w"))
    for _ in range(200):
        if os.path.exists(ports) and os.path.getsize(ports) > 0:
            break
        time.sleep(0.05)
    text = open(ports).read()
    grpc = re.search(r"grpc=(\d+)", text).group(1)
    metrics = re.search(r"metrics=(\d+)", text).group(1)
    return proc, int(grpc), int(metrics)


def connect_histogram(metrics_port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    buckets, total, count = [], 0.0, 0
    for line in body.splitlines():
        if not line.startswith("spotter_rpc_duration_seconds") or 'method="Connect"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if "_bucket" in line:
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets.append((float("inf") if le == "+Inf" else float(le), value))
        elif "_sum" in line:
            total = value
        elif "_count" in line:
            count = int(value)
    return sorted(buckets), total, count


def measure(args, dim, step_ms):
    with tempfile.TemporaryDirectory() as tmp:
        proc, grpc, metrics = start_spotterd(args.build, tmp)
        try:
            report = os.path.join(tmp, "load.json")
            subprocess.run(
                [os.path.join(args.build, "bench", "spotter_load"), "--server",
                 f"127.0.0.1:{grpc}", "--server_pid", str(proc.pid), "--streams", "16",
                 "--runs", "4", "--rows", "64", "--dim", str(dim), "--sketch_rows", "64",
                 "--window", "8", "--override_ms", "100", "--seconds", str(args.seconds),
                 "--step_ms", f"{step_ms:.3f}", "--report", report],
                check=True, stdout=subprocess.DEVNULL)
            load = json.load(open(report))
            buckets, total, count = connect_histogram(metrics)
        finally:
            proc.terminate()
            proc.wait()
    held = {f"{le * 1e3:g}ms": round(1.0 - cum / count, 4)
            for le, cum in buckets if le != float("inf") and 0.0005 <= le <= 0.05}
    return {"dim": dim, "step_ms": round(step_ms, 2), "messages": count,
            "mean_ms": round(1e3 * total / max(count, 1), 3), "share_held_longer_than": held,
            "rows_per_s": load.get("rows_per_s"),
            "directive_all_streams_ms": load.get("directive_all_streams_ms")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--dims", default="256,1024,4096")
    ap.add_argument("--json", default="", help="also write the figures here")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    results = {"commit": commit, "seconds": args.seconds, "rows": []}
    for dim in [int(d) for d in args.dims.split(",")]:
        step_ms = 0.0
        for load_share in (1.0, 0.5):
            row = measure(args, dim, step_ms)
            row["load"] = "saturated" if load_share == 1.0 else "paced at half"
            results["rows"].append(row)
            print(json.dumps(row))
            sys.stdout.flush()
            # 16 streams of 64-row batches: one batch per stream every step_ms.
            step_ms = 1e3 * 16 * 64 / (0.5 * row["rows_per_s"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
