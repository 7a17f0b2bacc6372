#!/usr/bin/env python3
"""The seed paper's small-transformer experiment (its section 5.2), scaled to
what two CPU cores can do: a small vision transformer on Fashion-MNIST
(Debian's dataset-fashion-mnist, read offline), four schedules at matched
steps, several seeds.

  constant     SGD+momentum at the peak LR throughout
  two_step     peak LR, x0.1 at 50% and again at 75% of the steps
  ng_only      K-FAC (spotter.torch.KFAC) from step 0 at the peak LR
  three_phase  spotter.torch.Monitor under spotterd in CONTROL mode: warm-up,
               automatic switch to natural gradient + LR cut, cosine polish,
               stop on a validation plateau

constant and two_step also carry a Monitor in ADVISE mode: their spectrum
trajectories (covariance and second moment) and the transitions the
controller would have made (the advisory switch point) are recorded without
changing their training.

Order of work, all against one spotterd:
  1. tuning: the constant schedule on each --tuning_seeds seed (never a
     reported seed), with phase_config()'s thresholds (server defaults for the
     three calibrated ones); runs/tuning-constant-s<seed>.json;
  2. calibration: `spotterctl calibrate` on those runs, --spectrum covariance
     (calibration.json, whose `proposed` rank_fraction_max, plateau_epsilon
     and id_drop_threshold replace phase_config()'s in every reported
     Monitor) and --spectrum second_moment (calibration_second_moment.json,
     recorded only);
  3. the reported runs, --seeds x --methods; runs/<method>-s<seed>.json.
--jobs N runs each stage's runs in N worker processes (--threads torch
threads each). Seeds set initialisation and batch order, and a monitored run
waits at each server evaluation step until the server has evaluated it
(--sync_evals, the default), so an evaluation reads exactly the uploads
through its step whatever the load: training, trajectories and (advisory)
decisions do not depend on --jobs. One thing does: the server places a
directive's effective step a delivery margin after its decision, from the
run's measured pace (docs/PHASES.md), so three_phase's switch, and its
training after it, may move by a step or two.

Resuming: existing run files are reused, and calibration.json is reused when
it exists; without it the tuning runs are run again (a fresh spotterd no
longer holds them, and calibrate reads them from the server).

  PYTHONPATH=build/client/python/site /usr/bin/python3 examples/torch_transformer.py \
      --spotterd build/server/spotterd --steps 1000 --seeds 0 1 2 3 4 --jobs 2 \
      --out docs/experiments/torch_transformer

writes calibration*.json, results.json, runs/*.json and the PNG plots into
--out (--table prints results.json as docs/EXPERIMENTS.md's table).
Nothing is downloaded. Statistics: examples/torch_transformer_stats.py.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import logging
import math
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_transformer_stats as stats  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"


# --------------------------------------------------------------------- data
def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(data_dir=DATA_DIR):
    """((x_train, y_train), (x_test, y_test)): float32 (N, 28, 28) normalised,
    int64 labels. 60k / 10k images, from the Debian package's gz files."""
    def part(img, lab):
        x = torch.tensor(read_idx(os.path.join(data_dir, img)), dtype=torch.float32) / 255.0
        y = torch.tensor(read_idx(os.path.join(data_dir, lab)), dtype=torch.int64)
        return (x - 0.2860) / 0.3530, y
    return (part("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
            part("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


# -------------------------------------------------------------------- model
class Block(nn.Module):
    """Pre-norm transformer block; attention through nn.Linear layers so the
    Monitor's taps (and K-FAC) cover qkv, proj, fc1 and fc2."""

    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """7x7 patches (16 tokens + a class token), `depth` blocks of width `dim`."""

    def __init__(self, dim=48, depth=3, heads=4, mlp=96, classes=10):
        super().__init__()
        self.embed = nn.Linear(49, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        b = x.shape[0]
        x = x.reshape(b, 4, 7, 4, 7).permute(0, 1, 3, 2, 4).reshape(b, 16, 49)
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(x)], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    loss = correct = 0.0
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch])
        loss += float(F.cross_entropy(out, y[i:i + batch], reduction="sum"))
        correct += float((out.argmax(1) == y[i:i + batch]).sum())
    model.train()
    return loss / len(x), correct / len(x)


# --------------------------------------------------------------------- runs
CALIBRATED = ("rank_fraction_max", "plateau_epsilon", "id_drop_threshold")


def phase_config(steps):
    """PhaseConfig for a run of `steps` steps (see docs/EXPERIMENTS.md). The
    calibrated thresholds (CALIBRATED) are left to the server's defaults here;
    with_calibration() puts calibration.json's proposals in."""
    return {"warmup_fraction": 0.15, "window_evals": 3, "confirm_evals": 2,
            "loss_decrease_min": 0.01, "min_dwell_steps": max(1, steps // 20), "lr_cut": 0.5,
            "refine_loss_rate_min": 0.02, "refine_budget_fraction": 0.75,
            "val_patience": 4, "val_min_delta": 0.001, "val_metric": "val_accuracy",
            "val_goal": "METRIC_GOAL_MAXIMIZE", "kfac_damping": 0.01,
            "kfac_factor_interval": 10, "kfac_inverse_interval": 50,
            "delivery_budget_seconds": 1.0}


def with_calibration(phase, calibration):
    """phase with the calibration's proposed thresholds replacing its own
    (a proposal of null leaves the field as it was)."""
    out = dict(phase)
    out.update({k: float(v) for k, v in calibration["proposed"].items()
                if k in CALIBRATED and v is not None})
    return out


def _spectrum(s):
    return dict(r90=s.effective_rank.value, r90_censored=s.effective_rank.censored,
                pr=s.participation_ratio.value, pr_raw=s.participation_ratio_raw)


def _server_record(client, run_name, last_step, eval_every, advisory, timeout=30.0):
    """The run's trajectory (both spectra per point) and transitions, once the
    server has evaluated up to the last evaluation step the uploads reach
    (evaluations run behind the uploads; waits at most ``timeout`` s)."""
    want = last_step // eval_every * eval_every
    deadline = time.monotonic() + timeout
    while True:
        tr = client.get_trajectory(run_name)
        top = max((p.step for p in tr.points), default=-1)
        if top >= want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if top < want:
        logging.warning("%s: last evaluation at step %d, expected %d", run_name, top, want)
    points = [dict(step=p.step, phase=p.phase, loss=p.loss, lr=p.lr,
                   covariance=_spectrum(p.covariance), second_moment=_spectrum(p.second_moment))
              for p in tr.points]
    transitions = [dict(step=t.step, decision_step=t.decision_step, frm=t.from_phase,
                        to=t.to_phase, cause=t.cause, reason=t.reason, advisory=advisory,
                        evidence=dict(t.evidence))
                   for t in tr.transitions]
    return points, transitions


def _await_evaluation(mon, client, step, timeout=30.0):
    """Blocks until the server has evaluated the run at ``step``: its uploads
    acked, then its latest trajectory point at ``step`` or later. The
    evaluation then reads exactly the uploads through ``step``, whatever the
    machine's load (docs/ARCHITECTURE.md: it reads what has arrived when it
    starts). True when it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    mon.flush(timeout)
    while time.monotonic() < deadline:
        if client.get_run(mon.run).latest.step >= step:
            return True
        time.sleep(0.002)
    logging.warning("%s: no evaluation at step %d after %.0f s", mon.run, step, timeout)
    return False


def run_one(method, seed, args, data, server=None, phase=None, name=None):
    """One training run; returns its record (the run file's content). ``phase``:
    the PhaseConfig of its Monitor (constant, two_step: ADVISE; three_phase:
    CONTROL); ``name``: the run file's stem, also the server run's prefix."""
    from spotter.torch import KFAC, Monitor, Taps
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    model = ViT()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    gen = torch.Generator().manual_seed(1000 + seed)
    val_idx = torch.randperm(len(xte), generator=torch.Generator().manual_seed(7))[:args.val_size]
    xv, yv = xte[val_idx], yte[val_idx]
    mon = kfac = taps = None
    run_name = f"{name or f'{method}-s{seed}'}-{int(time.time())}"
    if method in ("three_phase", "constant", "two_step") and server is not None:
        steps_per_epoch = args.steps_per_epoch or len(xtr) // args.batch
        mon = Monitor(model, opt, run=run_name, server=server, total_steps=args.steps,
                      peak_lr=args.lr, base_lr=args.lr / 10, sketch_every=args.sketch_every,
                      sketch_dim=256, max_rows=args.batch, seed=seed,
                      mode="control" if method == "three_phase" else "advise",
                      config={"sketch_rows": 256, "eval_every": args.spotter_eval_every,
                              "steps_per_epoch": steps_per_epoch, "decay": args.decay,
                              "phase": phase,
                              "labels": {"example": "torch_transformer", "method": method}})
    elif method == "ng_only":
        taps = Taps(model, seed, 256, "per_example")
        kfac = KFAC(taps.layers, damping=0.01, factor_update_interval=10, inverse_update_interval=50)
    client = None
    if mon is not None and args.sync_evals:
        from spotter import Client
        client = Client(server)
    curve, t0 = [], time.time()
    step = 0
    sync_seconds, sync_misses = 0.0, 0
    stopped_at = None
    while step < args.steps:
        if taps is not None:
            taps.begin_step(sketch=False, factors=step % kfac.factor_update_interval == 0)
        if method == "two_step":
            lr = args.lr * (0.1 if step >= args.steps // 2 else 1) * (0.1 if step >= 3 * args.steps // 4 else 1)
            for g in opt.param_groups:
                g["lr"] = lr
        idx = torch.randint(0, len(xtr), (args.batch,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        loss.backward()
        if mon is not None:
            mon.step(loss)
            if client is not None and step > 0 and step % args.spotter_eval_every == 0 \
                    and step % args.sketch_every == 0:
                t1 = time.time()
                sync_misses += not _await_evaluation(mon, client, step)
                sync_seconds += time.time() - t1
            if mon.should_stop:
                stopped_at = mon.step_count
                break
        else:
            if kfac is not None:
                kfac.update_factors()
                if step % kfac.inverse_update_interval == 0:
                    kfac.update_inverses()
                kfac.precondition(args.lr / (1 - 0.9))
            opt.step()
        step += 1
        if step % args.eval_every == 0 or step == args.steps:
            vl, va = evaluate(model, xv, yv)
            curve.append((step, vl, va, opt.param_groups[0]["lr"]))
            if mon is not None:
                mon.report_eval({"val_loss": vl, "val_accuracy": va})
            if not math.isfinite(vl):
                break
    wall = time.time() - t0
    n_test = args.test_size or len(xte)
    test_loss, test_acc = evaluate(model, xte[:n_test], yte[:n_test])
    out = dict(method=method, seed=seed, steps=step if stopped_at is None else stopped_at,
               stopped_at=stopped_at, wall_seconds=wall, seconds_per_step=wall / max(1, step),
               threads=torch.get_num_threads(), test_images=n_test, test_loss=test_loss,
               test_accuracy=test_acc, curve=curve)
    if mon is not None:
        from spotter import Client
        out.update(run=run_name, mode="control" if method == "three_phase" else "advise",
                   phase_config=phase)
        out["monitor"] = mon.stats()
        out["sync_evals"] = dict(on=client is not None, seconds=sync_seconds, misses=sync_misses)
        if client is not None:
            client.close()
        out["applied"] = [a.__dict__ for a in mon.applied]
        mon.session.flush(10)
        last = (max(0, mon.step_count - 1) // args.sketch_every) * args.sketch_every
        with Client(server) as c:
            out["trajectory"], out["transitions"] = _server_record(
                c, run_name, last, args.spotter_eval_every, advisory=method != "three_phase")
        out["switch"] = stats.switch_point(out)
        mon.close()
    return out


# ------------------------------------------------------------ orchestration
_DATA = None


def _init_worker(threads, watch_parent=False):
    """Worker process set-up: logging, torch threads, the data (once); a
    worker (``watch_parent``) exits when the main process is gone, rather
    than train on for nobody."""
    global _DATA
    if watch_parent:
        parent = os.getppid()

        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(message)s")
    torch.set_num_threads(threads)
    _DATA = load_fashion_mnist()


def _run_job(job):
    """Runs one job (method, seed, stem, phase) and writes runs/<stem>.json."""
    method, seed, stem, phase, args, server = job
    logging.info("run %s seed %d (%s)", method, seed, stem)
    r = run_one(method, seed, args, _DATA, server, phase, stem)
    logging.info("  %s -> test acc %.4f, steps %d, %.0fs", stem, r["test_accuracy"], r["steps"],
                 r["wall_seconds"])
    r["commit"] = args.commit
    path = os.path.join(args.out, "runs", f"{stem}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(r, f)
    os.replace(path + ".tmp", path)
    return r


def run_jobs(jobs, args, pool):
    """Runs ``jobs`` (in ``pool``, or here when None); their records, in job order."""
    if pool is None:
        return [_run_job(j) for j in jobs]
    futures = [pool.submit(_run_job, j) for j in jobs]
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def load_or_queue(specs, args, server, reuse=True):
    """Splits (method, seed, stem, phase) specs into records read from their
    run files and jobs to run."""
    done, todo = {}, []
    for method, seed, stem, phase in specs:
        path = os.path.join(args.out, "runs", f"{stem}.json")
        if reuse and os.path.exists(path):
            with open(path) as f:
                done[stem] = json.load(f)
            if done[stem].get("phase_config", phase) != phase:
                logging.warning("%s was run with another PhaseConfig than this calibration's "
                                "(%s); delete it to rerun", path, done[stem].get("phase_config"))
        else:
            todo.append((method, seed, stem, phase, args, server))
    return done, todo


def calibrate(args, target, runs):
    """`spotterctl calibrate` on ``runs`` for both spectra; writes
    calibration.json (covariance) and calibration_second_moment.json, each
    with the exact command in "spotterctl_command". Returns the covariance one."""
    out = {}
    for spectrum, fname in (("covariance", "calibration.json"),
                            ("second_moment", "calibration_second_moment.json")):
        cmd = [args.spotterctl, "--server", target, "--output", "json", "calibrate", *runs,
               "--spectrum", spectrum]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
        try:
            cal = json.loads(p.stdout)
        except json.JSONDecodeError as e:
            raise RuntimeError(f"{shlex.join(cmd)}: not one JSON object ({e}): {p.stdout[:500]}")
        cal["spotterctl_command"], cal["commit"] = shlex.join(cmd), args.commit
        with open(os.path.join(args.out, fname), "w") as f:
            json.dump(cal, f, indent=1)
        out[spectrum] = cal
        logging.info("calibration (%s): proposed %s", spectrum, cal.get("proposed"))
    return out["covariance"]


def git_commit():
    """HEAD of the tree this script runs from, short, plus -dirty when tracked
    files differ from it; "unknown" outside git."""
    try:
        head = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", HERE, "diff", "--quiet", "HEAD", "--"]).returncode
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

# -------------------------------------------------------------------- plots
def plot(results, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"constant": "tab:gray", "two_step": "tab:blue", "ng_only": "tab:orange",
              "three_phase": "tab:red"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    first = min(x["seed"] for x in results)
    for r in results:
        c = np.array([x[:3] for x in r["curve"]])
        ax.plot(c[:, 0], c[:, 2], color=colors.get(r["method"], "k"), alpha=0.8, lw=1,
                label=r["method"] if r["seed"] == first else None)
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0.5, None)
    ax.legend()
    ax.set_title("Fashion-MNIST small ViT: validation accuracy (all seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "accuracy.png"), dpi=110)
    plt.close(fig)
    for method in ("three_phase", "constant", "two_step"):
        rs = sorted((r for r in results if r["method"] == method and r.get("trajectory")),
                    key=lambda r: r["seed"])
        if not rs:
            continue
        r = rs[0]
        tr = r["trajectory"]
        steps = [p["step"] for p in tr]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for spec, ls in (("covariance", "-"), ("second_moment", "--")):
            ax.plot(steps, [p[spec]["r90"] for p in tr], ls, color="tab:green", lw=1.2,
                    label=f"effective rank r90 ({spec.replace('_', ' ')})")
            ax.plot(steps, [p[spec]["pr"] for p in tr], ls, color="tab:purple", lw=1.2,
                    label=f"participation ratio ({spec.replace('_', ' ')})")
        for t in r.get("transitions", []):
            if t["to"] != t["frm"]:
                ax.axvline(t["step"], color="k", ls=":" if t["advisory"] else "--", lw=1)
                ax.text(t["step"], ax.get_ylim()[1] * 0.95, " " + stats.PHASES.get(t["to"], "?") +
                        (" (advisory)" if t["advisory"] else ""), fontsize=8, va="top")
        ax.set_xlabel("step")
        ax.set_ylabel("dimensions")
        ax.set_title(f"{method} (seed {r['seed']}): gradient spectrum trajectory")
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, f"trajectory_{method}.png"), dpi=110)
        plt.close(fig)


# --------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spotterd", help="the spotterd binary (required unless --table)")
    ap.add_argument("--spotterctl", help="the spotterctl binary [next to --spotterd in a build "
                    "tree: <build>/client/cpp/spotterctl]")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tuning_seeds", type=int, nargs="+", default=[100, 101, 102],
                    help="seeds of the constant runs the thresholds are calibrated on")
    ap.add_argument("--methods", nargs="+", default=list(stats.METHODS))
    ap.add_argument("--jobs", type=int, default=1, help="runs at once, one worker process each")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--eval_every", type=int, default=100, help="steps between validations")
    ap.add_argument("--val_size", type=int, default=2000)
    ap.add_argument("--test_size", type=int, default=0,
                    help="test images scored at the end [0: all 10,000]")
    ap.add_argument("--sketch_every", type=int, default=2)
    ap.add_argument("--spotter_eval_every", type=int, default=20,
                    help="RunConfig.eval_every: steps between the server's evaluations")
    ap.add_argument("--steps_per_epoch", type=int, default=0,
                    help="RunConfig.steps_per_epoch [0: the training set's, 60000 / batch]")
    ap.add_argument("--decay", type=float, default=0.98, help="RunConfig.decay (sketch window)")
    ap.add_argument("--sync_evals", action=argparse.BooleanOptionalAction, default=True,
                    help="Monitored runs wait at each server evaluation step until it is "
                    "evaluated, so evaluations do not depend on load or --jobs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out", default="docs/experiments/torch_transformer")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out's results.json")
    args = ap.parse_args()
    if args.table:
        with open(os.path.join(args.out, "results.json")) as f:
            print(stats.markdown(json.load(f)))
        return
    if not args.spotterd:
        ap.error("--spotterd is required")
    args.spotterctl = args.spotterctl or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(args.spotterd))), "client", "cpp", "spotterctl")
    if set(args.seeds) & set(args.tuning_seeds):
        ap.error("--tuning_seeds must not overlap --seeds")
    if args.sync_evals and args.spotter_eval_every % args.sketch_every:
        ap.error("--sync_evals needs --spotter_eval_every a multiple of --sketch_every")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from spotter.testing import Spotterd
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    args.commit = git_commit()  # before anything is written; every file records it
    t_start, load_start = time.time(), os.getloadavg()
    timing = {}
    pool = None
    if args.jobs > 1:
        pool = concurrent.futures.ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(args.threads, True))
    else:
        _init_worker(args.threads)
    server = Spotterd(args.spotterd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM runs the clean-up below
    ok = False
    try:
        cal_path = os.path.join(args.out, "calibration.json")
        base = phase_config(args.steps)
        tuning_specs = [("constant", s, f"tuning-constant-s{s}", base) for s in args.tuning_seeds]
        if os.path.exists(cal_path):
            with open(cal_path) as f:
                calibration = json.load(f)
            tuning, _ = load_or_queue(tuning_specs, args, server.target)
            logging.info("reusing %s: proposed %s", cal_path, calibration.get("proposed"))
        else:
            # calibrate reads the runs from the server: rerun any this spotterd lacks.
            t0 = time.time()
            _, todo = load_or_queue(tuning_specs, args, server.target, reuse=False)
            tuning = {r["run"]: r for r in run_jobs(todo, args, pool)}
            timing["tuning_seconds"] = time.time() - t0
            t0 = time.time()
            calibration = calibrate(args, server.target, list(tuning))
            timing["calibration_seconds"] = time.time() - t0
        phase = with_calibration(base, calibration)
        specs = [(m, s, f"{m}-s{s}", phase if m in ("constant", "two_step", "three_phase") else None)
                 for s in args.seeds for m in args.methods]
        t0 = time.time()
        done, todo = load_or_queue(specs, args, server.target)
        fresh = {f"{r['method']}-s{r['seed']}": r for r in run_jobs(todo, args, pool)}
        timing["reported_seconds"] = time.time() - t0
        timing["reused_runs"] = sorted(done)
        results = [done.get(stem) or fresh[stem] for _, _, stem, _ in specs]
        ok = True
    finally:
        if pool is not None:
            if not ok:  # stop the runs in flight (their files are never written)
                for p in list((pool._processes or {}).values()):
                    p.terminate()
            pool.shutdown(wait=ok, cancel_futures=True)
        server.stop()
    summary = stats.summarize(results, args.steps)
    summary.update(
        commit=args.commit,
        # Reused run files keep the commit they were made at.
        run_commits=sorted({r.get("commit", "unknown") for r in [*results, *tuning.values()]}),
        command=" ".join(["examples/torch_transformer.py"] + [shlex.quote(a) for a in sys.argv[1:]]),
        seeds=args.seeds, tuning_seeds=args.tuning_seeds, jobs=args.jobs, threads=args.threads,
        calibration=dict(file="calibration.json", spotterctl_command=calibration.get("spotterctl_command"),
                         proposed=calibration.get("proposed"), runs=calibration.get("runs"),
                         runs_switched=calibration.get("runs_switched")),
        phase_config=phase,
        tuning_runs={r.get("run", k): dict(seed=r["seed"], switch=r.get("switch"),
                                           wall_seconds=r["wall_seconds"])
                     for k, r in sorted(tuning.items())},
        run_times=dict(timing, total_seconds=time.time() - t_start,
                       per_run={f"{r['method']}-s{r['seed']}": r["wall_seconds"] for r in results},
                       load_average_start=load_start, load_average_end=os.getloadavg()))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plot(results, args.out)
    print(stats.markdown(summary))


if __name__ == "__main__":
    main()
