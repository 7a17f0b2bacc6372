#!/usr/bin/python3
"""Plots of a quadratic_bowl output directory (PNG, matplotlib).

  plot.py OUT_DIR [PNG_DIR]

loss.png      excess loss against steps: median and interquartile band per arm,
              the target, and the three-phase arms' phase boundaries
rank_pr.png   r90 and participation ratio against steps: spotterd's estimates
              for every three-phase run, the exact values of the population
              gradient covariance, and the phase boundaries
steps.png     steps to target per seed and arm, beside the paper's numbers

The arms with K-FAC's estimate of the Fisher (ng_estimated,
three_phase_estimated) are drawn dashed, in their own colors.
"""
import csv
import math
import os
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARMS = ["constant", "two_step", "natural_gradient", "ng_estimated", "three_phase",
        "three_phase_estimated"]
THREE_PHASE = ["three_phase", "three_phase_estimated"]
LABEL = {"constant": "constant LR", "two_step": "two-step decay",
         "natural_gradient": "natural gradient (exact Fisher)",
         "ng_estimated": "natural gradient (K-FAC estimate)",
         "three_phase": "three-phase (spotterd, exact Fisher)",
         "three_phase_estimated": "three-phase (spotterd, K-FAC estimate)"}
COLOR = {"constant": "tab:gray", "two_step": "tab:blue", "natural_gradient": "tab:green",
         "ng_estimated": "tab:olive", "three_phase": "tab:red",
         "three_phase_estimated": "tab:purple"}
STYLE = {"ng_estimated": "--", "three_phase_estimated": "--"}
# The paper has no estimated-Fisher arms.
PAPER = {"constant": 4800, "two_step": 3900, "natural_gradient": 3500, "three_phase": 3100}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def quantiles(values):
    v = sorted(values)
    def q(p):
        pos = p * (len(v) - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (pos - lo) * (v[hi] - v[lo])
    return q(0.25), q(0.5), q(0.75)


def boundaries(results):
    """Per three-phase arm: the median effective steps of its transitions."""
    out = {}
    for arm in THREE_PHASE:
        for key in ("refinement_step", "polish_step", "done_step"):
            v = [int(r[key]) for r in results if r["arm"] == arm and r[key]]
            if v:
                out.setdefault(arm, {})[key.split("_")[0]] = statistics.median(v)
    return out


def mark_phases(ax, marks):
    for arm, steps in marks.items():
        for name, step in steps.items():
            ax.axvline(step, color=COLOR[arm], ls=":", lw=1)
            ax.text(step, 1.0, " " + name, transform=ax.get_xaxis_transform(), color=COLOR[arm],
                    fontsize=8, va="top", rotation=90)


def main():
    out = sys.argv[1]
    png = sys.argv[2] if len(sys.argv) > 2 else out
    os.makedirs(png, exist_ok=True)
    curves = rows(os.path.join(out, "curves.csv"))
    results = rows(os.path.join(out, "results.csv"))
    points_path = os.path.join(out, "spotter_points.csv")
    points = rows(points_path) if os.path.exists(points_path) else []
    marks = boundaries(results)
    arms = [a for a in ARMS if any(r["arm"] == a for r in results)]

    # Per arm and step: the values over seeds.
    by = defaultdict(lambda: defaultdict(list))
    for c in curves:
        by[c["arm"]][int(c["step"])].append(c)

    # 1. Loss.
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in arms:
        steps = sorted(by[arm])
        q = [quantiles([float(c["loss"]) for c in by[arm][s]]) for s in steps]
        ax.plot(steps, [x[1] for x in q], color=COLOR[arm], ls=STYLE.get(arm, "-"),
                label=LABEL[arm])
        ax.fill_between(steps, [x[0] for x in q], [x[2] for x in q], color=COLOR[arm], alpha=0.2)
    target = 1e-6
    ax.axhline(target, color="black", lw=0.8, ls="--")
    ax.text(0, target, "target 1e-6", va="bottom", fontsize=8)
    mark_phases(ax, marks)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("excess loss L(theta) (median, IQR band)")
    ax.set_title("Quadratic bowl: excess loss")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(png, "loss.png"), dpi=110)
    plt.close(fig)

    # 2. Rank and PR.
    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    # Older outputs have no arm column: every point is the three_phase arm's.
    runs = sorted({(p.get("arm", "three_phase"), int(p["seed"])) for p in points})
    for key, ax, title in (("r90", axes[0], "effective rank r90"),
                           ("pr", axes[1], "participation ratio")):
        est = "r90" if key == "r90" else "pr"
        labelled = set()
        for arm, seed in runs:
            pts = [p for p in points
                   if p.get("arm", "three_phase") == arm and int(p["seed"]) == seed]
            ax.plot([int(p["step"]) for p in pts], [float(p[est]) for p in pts],
                    color=COLOR[arm], alpha=0.35, lw=0.8,
                    label=None if arm in labelled else "spotterd estimate, %s" % LABEL[arm])
            labelled.add(arm)
        for arm, style in (("three_phase", "-"), ("constant", "--")):
            if arm not in by:
                continue
            steps = sorted(by[arm])
            med = [statistics.median(float(c[key]) for c in by[arm][s]) for s in steps]
            ax.plot(steps, med, color="black" if arm == "three_phase" else "tab:gray", ls=style,
                    lw=1.2, label="exact, %s (median)" % LABEL[arm])
        mark_phases(ax, marks)
        ax.set_ylabel(title)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=8)
    axes[1].set_xlabel("step")
    axes[0].set_title("Gradient covariance spectrum: spotterd's sketch vs the exact covariance")
    fig.tight_layout()
    fig.savefig(os.path.join(png, "rank_pr.png"), dpi=110)
    plt.close(fig)

    # 3. Steps to target.
    budget = max(int(r["steps_run"]) for r in results) if results else 5000
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, arm in enumerate(arms):
        v = [int(r["steps_to_target"]) for r in results if r["arm"] == arm]
        shown = [x if x >= 0 else budget * 1.05 for x in v]
        ax.scatter([i + (j - len(v) / 2) * 0.02 for j in range(len(v))], shown,
                   color=COLOR[arm], s=14, label="ours, per seed" if i == 0 else None)
        reached = [x for x in v if x >= 0]
        if len(reached) * 2 > len(v):
            ax.hlines(statistics.median(v if len(reached) == len(v) else
                                        [x if x >= 0 else 10 ** 9 for x in v]),
                      i - 0.25, i + 0.25, color=COLOR[arm])
        if arm in PAPER:
            ax.scatter([i + 0.3], [PAPER[arm]], marker="x", color="black",
                       label="paper" if i == 0 else None)
    ax.axhline(budget, color="black", lw=0.5, ls="--")
    ax.set_xticks(range(len(arms)), [LABEL[a].replace(" (", "\n(") for a in arms], fontsize=7)
    ax.set_ylabel("steps to excess loss < 1e-6")
    ax.set_yscale("log")
    ax.set_title("Steps to target (bar: median; above the dashed line: not reached)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(png, "steps.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
