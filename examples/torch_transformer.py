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

The constant run also carries a Monitor in ADVISE mode, so its PR / rank
trajectory (and the transitions the controller would have made) is recorded
without changing its training.

  examples/torch_transformer.py --spotterd build-py/server/spotterd \
      --steps 2000 --seeds 0 1 2 --out docs/experiments/torch_transformer

writes results.json, runs/*.json and the PNG plots into --out; docs/EXPERIMENTS.md
quotes them. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
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
def phase_config(steps):
    """PhaseConfig for a run of `steps` steps (see docs/EXPERIMENTS.md)."""
    return {"warmup_fraction": 0.15, "window_evals": 3, "confirm_evals": 2,
            "rank_fraction_max": 0.6, "plateau_epsilon": 0.15, "loss_decrease_min": 0.01,
            "min_dwell_steps": max(1, steps // 20), "lr_cut": 0.5,
            "refine_loss_rate_min": 0.02, "refine_budget_fraction": 0.75,
            "val_patience": 4, "val_min_delta": 0.001, "val_metric": "val_accuracy",
            "val_goal": "METRIC_GOAL_MAXIMIZE", "kfac_damping": 0.01,
            "kfac_factor_interval": 10, "kfac_inverse_interval": 50,
            "delivery_budget_seconds": 1.0}


def run_one(method, seed, args, data, server=None):
    from spotter.torch import KFAC, Monitor, Taps
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    model = ViT()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    gen = torch.Generator().manual_seed(1000 + seed)
    val_idx = torch.randperm(len(xte), generator=torch.Generator().manual_seed(7))[:args.val_size]
    xv, yv = xte[val_idx], yte[val_idx]
    mon = kfac = taps = None
    run_name = f"{method}-s{seed}-{int(time.time())}"
    if method in ("three_phase", "constant") and server is not None:
        steps_per_epoch = len(xtr) // args.batch
        mon = Monitor(model, opt, run=run_name, server=server, total_steps=args.steps,
                      peak_lr=args.lr, base_lr=args.lr / 10, sketch_every=args.sketch_every,
                      sketch_dim=256, max_rows=args.batch, seed=seed,
                      mode="control" if method == "three_phase" else "advise",
                      config={"sketch_rows": 256, "eval_every": 20, "steps_per_epoch": steps_per_epoch,
                              "decay": 0.98, "phase": phase_config(args.steps),
                              "labels": {"example": "torch_transformer", "method": method}})
    elif method == "ng_only":
        taps = Taps(model, seed, 256, "per_example")
        kfac = KFAC(taps.layers, damping=0.01, factor_update_interval=10, inverse_update_interval=50)
    curve, t0 = [], time.time()
    step = 0
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
    test_loss, test_acc = evaluate(model, xte, yte)
    out = dict(method=method, seed=seed, steps=step if stopped_at is None else stopped_at,
               stopped_at=stopped_at, wall_seconds=wall, test_loss=test_loss, test_accuracy=test_acc,
               curve=curve)
    if mon is not None:
        from spotter import Client
        out["monitor"] = mon.stats()
        out["applied"] = [a.__dict__ for a in mon.applied]
        mon.session.flush(10)
        with Client(server) as c:
            tr = c.get_trajectory(run_name)
            out["trajectory"] = [(p.step, p.covariance.effective_rank.value,
                                  p.covariance.effective_rank.censored,
                                  p.covariance.participation_ratio.value,
                                  p.participation_ratio_raw if hasattr(p, "participation_ratio_raw") else
                                  p.covariance.participation_ratio_raw, p.loss, p.phase)
                                 for p in tr.points]
            out["transitions"] = [dict(step=t.step, frm=t.from_phase, to=t.to_phase, cause=t.cause,
                                       reason=t.reason, advisory=method != "three_phase")
                                  for t in tr.transitions]
        mon.close()
    return out


# ------------------------------------------------------------------ summary
def summarize(results, steps):
    by = {}
    for r in results:
        by.setdefault(r["method"], []).append(r)
    # Target: each seed's constant-LR best validation accuracy.
    target = {r["seed"]: max(c[2] for c in r["curve"]) for r in by.get("constant", [])}
    table = {}
    for m, rs in by.items():
        reach = []
        for r in rs:
            t = target.get(r["seed"])
            s = next((c[0] for c in r["curve"] if t is not None and c[2] >= t), None)
            reach.append(s)
        ok = [s for s in reach if s is not None]
        table[m] = dict(
            seeds=len(rs),
            test_accuracy_mean=float(np.mean([r["test_accuracy"] for r in rs])),
            test_accuracy_std=float(np.std([r["test_accuracy"] for r in rs])),
            best_val_accuracy_mean=float(np.mean([max(c[2] for c in r["curve"]) for r in rs])),
            steps_used_mean=float(np.mean([r["steps"] for r in rs])),
            steps_to_target=reach,
            steps_to_target_mean=float(np.mean(ok)) if ok else None,
            reached=f"{len(ok)}/{len(rs)}",
            wall_seconds_mean=float(np.mean([r["wall_seconds"] for r in rs])),
        )
    return dict(steps=steps, target="each seed's best validation accuracy under constant LR",
                methods=table)


def plot(results, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"constant": "tab:gray", "two_step": "tab:blue", "ng_only": "tab:orange",
              "three_phase": "tab:red"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        c = np.array([x[:3] for x in r["curve"]])
        ax.plot(c[:, 0], c[:, 2], color=colors[r["method"]], alpha=0.8, lw=1,
                label=r["method"] if r["seed"] == min(x["seed"] for x in results) else None)
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0.5, None)
    ax.legend()
    ax.set_title("Fashion-MNIST small ViT: validation accuracy (all seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "accuracy.png"), dpi=110)
    plt.close(fig)
    for method in ("three_phase", "constant"):
        rs = [r for r in results if r["method"] == method and r.get("trajectory")]
        if not rs:
            continue
        r = rs[0]
        tr = np.array([(p[0], p[1], p[3]) for p in r["trajectory"]], dtype=float)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(tr[:, 0], tr[:, 1], label="effective rank r90 (covariance)", color="tab:green")
        ax.plot(tr[:, 0], tr[:, 2], label="participation ratio (bias-corrected)", color="tab:purple")
        names = {1: "acquisition", 2: "refinement", 3: "polish", 4: "done"}
        for t in r.get("transitions", []):
            if t["to"] != t["frm"]:
                ax.axvline(t["step"], color="k", ls="--" if not t["advisory"] else ":", lw=1)
                ax.text(t["step"], ax.get_ylim()[1] * 0.95, " " + names.get(t["to"], "?") +
                        (" (advisory)" if t["advisory"] else ""), fontsize=8, va="top")
        ax.set_xlabel("step")
        ax.set_ylabel("dimensions")
        ax.set_title(f"{method} (seed {r['seed']}): gradient spectrum trajectory")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, f"trajectory_{method}.png"), dpi=110)
        plt.close(fig)


def markdown(summary):
    """The results table of docs/EXPERIMENTS.md, from results.json."""
    rows = ["| schedule | seeds | test accuracy (mean +- sd) | best val accuracy | steps used "
            "| steps to target (per seed) | reached | wall s / run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in ("constant", "two_step", "ng_only", "three_phase"):
        t = summary["methods"].get(m)
        if not t:
            continue
        reach = ", ".join("-" if s is None else str(s) for s in t["steps_to_target"])
        rows.append(f"| {m} | {t['seeds']} | {100 * t['test_accuracy_mean']:.2f} +- "
                    f"{100 * t['test_accuracy_std']:.2f} | {100 * t['best_val_accuracy_mean']:.2f} | "
                    f"{t['steps_used_mean']:.0f} | {reach} | {t['reached']} | {t['wall_seconds_mean']:.0f} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spotterd", required=True, help="the spotterd binary")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["constant", "two_step", "ng_only", "three_phase"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--eval_every", type=int, default=100)
    ap.add_argument("--val_size", type=int, default=2000)
    ap.add_argument("--sketch_every", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/experiments/torch_transformer")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out's results.json")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.load(open(os.path.join(args.out, "results.json")))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    from spotter.testing import Spotterd
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    data = load_fashion_mnist()
    server = Spotterd(args.spotterd)
    results = []
    try:
        for seed in args.seeds:
            for method in args.methods:
                path = os.path.join(args.out, "runs", f"{method}-s{seed}.json")
                if os.path.exists(path):
                    results.append(json.load(open(path)))
                    continue
                logging.info("run %s seed %d", method, seed)
                r = run_one(method, seed, args, data, server.target)
                logging.info("  -> test acc %.4f, steps %d, %.0fs", r["test_accuracy"], r["steps"],
                             r["wall_seconds"])
                json.dump(r, open(path, "w"))
                results.append(r)
    finally:
        server.stop()
    summary = summarize(results, args.steps)
    summary["command"] = " ".join(["examples/torch_transformer.py"] + sys.argv[1:])
    json.dump(summary, open(os.path.join(args.out, "results.json"), "w"), indent=1)
    plot(results, args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
