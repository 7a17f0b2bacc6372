"""Statistics and the results table of examples/torch_transformer.py.

No scipy: the Student t quantiles a 95% confidence interval needs are a table
(df 1..30), checked by check_t_table() against a numerical integral of the t
density (ctest torch_transformer_short runs it).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

# Two-sided 95% (one-sided 97.5%) quantiles of Student's t, df = 1..30.
# Known values: df 1 is tan(0.475 pi) = 12.7062047; df 2 is
# 0.95 / sqrt(2 x 0.975 x 0.025) = 4.3026527 (the closed form of t_2);
# df 10 is 2.2281389 and df 30 is 2.0422725 (every printed t table);
# check_t_table() verifies all 30 to 1e-6.
T975 = (12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836,
        2.446911851, 2.364624252, 2.306004135, 2.262157163, 2.228138852,
        2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546,
        2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447,
        2.079613845, 2.073873068, 2.068657610, 2.063898562, 2.059538553,
        2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456)

PHASES = {0: "unspecified", 1: "acquisition", 2: "refinement", 3: "polish", 4: "done"}
REFINEMENT = 2
METHODS = ("constant", "two_step", "ng_only", "three_phase")
FIXED = ("constant", "two_step")


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom:
    the table up to 30, then the Cornish-Fisher expansion around the normal
    quantile (error < 1e-4 beyond df 30)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959963985
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def _t_cdf(t: float, df: int, n: int = 4000) -> float:
    """P(T <= t), t >= 0, by Simpson's rule on the density over [0, t]."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = t / n
    s = f(0.0) + f(t) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
    return 0.5 + s * h / 3


def check_t_table(tol: float = 1e-6) -> None:
    """Raises AssertionError unless every tabulated quantile has CDF 0.975."""
    for df, t in enumerate(T975, 1):
        p = _t_cdf(t, df)
        assert abs(p - 0.975) < tol, f"t table df {df}: CDF({t}) = {p}"
    assert abs(t975(31) - 2.0395134) < 1e-4 and abs(t975(60) - 2.0002978) < 1e-4


def mean_ci(xs: Sequence[float]) -> Dict:
    """Mean, sample sd and the 95% Student-t confidence interval of the mean
    (n - 1 degrees of freedom; no interval for n < 2)."""
    xs = [float(x) for x in xs]
    n = len(xs)
    out = dict(n=n, mean=None, sd=None, ci95=None)
    if n == 0:
        return out
    m = sum(xs) / n
    out["mean"] = m
    if n >= 2:
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
        half = t975(n - 1) * sd / math.sqrt(n)
        out.update(sd=sd, ci95=[m - half, m + half])
    return out


# ---------------------------------------------------------------- per run
def first_reach(curve, target) -> Optional[int]:
    """First evaluation step whose validation accuracy is >= target."""
    return next((c[0] for c in curve if target is not None and c[2] >= target), None)


def switch_point(run) -> Optional[Dict]:
    """The run's first transition into REFINEMENT (advisory for the fixed
    schedules, applied for three_phase): its effective and decision step, and
    the transitions after it (``later``)."""
    trs = run.get("transitions", [])
    i = next((i for i, t in enumerate(trs) if t["to"] == REFINEMENT), None)
    if i is None:
        return None
    brief = lambda t: dict(step=t["step"], decision_step=t.get("decision_step"),  # noqa: E731
                           to=PHASES.get(t["to"], t["to"]), reason=t.get("reason", ""))
    return dict(brief(trs[i]), advisory=trs[i]["advisory"], later=[brief(t) for t in trs[i + 1:]])


# ---------------------------------------------------------------- summary
def summarize(results: List[Dict], steps: int) -> Dict:
    """Per schedule over the reported seeds: test accuracy (mean, 95% t CI),
    paired differences against the best fixed schedule, steps to the constant
    arm's best validation accuracy and the relative saving, switch steps."""
    by: Dict[str, Dict[int, Dict]] = {}
    for r in results:
        by.setdefault(r["method"], {})[r["seed"]] = r
    # The paper's "fewer steps" target: each seed's best constant-LR validation accuracy.
    target = {s: max(c[2] for c in r["curve"]) for s, r in by.get("constant", {}).items()}
    const_reach = {s: first_reach(r["curve"], target[s]) for s, r in by.get("constant", {}).items()}
    fixed = {m: mean_ci([r["test_accuracy"] for r in by[m].values()])["mean"]
             for m in FIXED if m in by}
    best_fixed = max(fixed, key=fixed.get) if fixed else None
    table = {}
    for m in [m for m in METHODS if m in by] + sorted(set(by) - set(METHODS)):
        rs = by[m]
        seeds = sorted(rs)
        acc = [rs[s]["test_accuracy"] for s in seeds]
        reach = [first_reach(rs[s]["curve"], target.get(s)) for s in seeds]
        saving = [None if (a is None or const_reach.get(s) in (None, 0)) else 1 - a / const_reach[s]
                  for s, a in zip(seeds, reach)]
        got = [x for x in saving if x is not None]
        sav = mean_ci(got)
        if len(got) < len(seeds):  # an interval over the seeds that reached would be biased
            sav["ci95"] = None
        t = dict(
            seeds=seeds,
            test_accuracy=acc,
            test_accuracy_stats=mean_ci(acc),
            best_val_accuracy_mean=mean_ci([max(c[2] for c in rs[s]["curve"]) for s in seeds])["mean"],
            steps_used=[rs[s]["steps"] for s in seeds],
            steps_to_target=reach,
            reached=f"{sum(a is not None for a in reach)}/{len(seeds)}",
            saving_vs_constant=saving,
            saving_vs_constant_stats=sav,
            switch=[switch_point(rs[s]) for s in seeds],
            wall_seconds=[rs[s]["wall_seconds"] for s in seeds],
        )
        ref = by.get(best_fixed, {})
        if best_fixed is not None and m != best_fixed:
            paired = [s for s in seeds if s in ref]
            diff = [rs[s]["test_accuracy"] - ref[s]["test_accuracy"] for s in paired]
            t["diff_vs_best_fixed"] = dict(reference=best_fixed, seeds=paired, per_seed=diff,
                                           stats=mean_ci(diff))
        table[m] = t
    return dict(steps=steps, best_fixed=best_fixed,
                target="each seed's best validation accuracy under constant LR",
                constant_steps_to_target=[const_reach[s] for s in sorted(const_reach)],
                methods=table)


# ---------------------------------------------------------------- table
def _pct(st, digits=2) -> str:
    if st["mean"] is None:
        return "-"
    s = f"{100 * st['mean']:.{digits}f}"
    if st["ci95"] is not None:
        s += f" [{100 * st['ci95'][0]:.{digits}f}, {100 * st['ci95'][1]:.{digits}f}]"
    return s


def markdown(summary: Dict) -> str:
    """The results table of docs/EXPERIMENTS.md, from results.json. Brackets
    are 95% Student-t confidence intervals over the seeds."""
    best = summary.get("best_fixed")
    rows = [f"| schedule | seeds | test accuracy % [95% CI] | minus {best or 'best fixed'} "
            "(paired) [95% CI] | best val accuracy % | steps used | steps to target (per seed) "
            "| fewer steps than constant % [95% CI] | switch step (per seed) | wall s / run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m, t in summary["methods"].items():
        reach = ", ".join("-" if s is None else str(s) for s in t["steps_to_target"])
        d = t.get("diff_vs_best_fixed")
        diff = _pct(d["stats"]) if d else "(reference)" if m == best else "-"
        sav = _pct(t["saving_vs_constant_stats"], 0) if m != "constant" else "(reference)"
        if m != "constant" and t["saving_vs_constant_stats"]["n"] < len(t["seeds"]):
            sav += f" ({t['saving_vs_constant_stats']['n']} of {len(t['seeds'])} seeds reached)"
        sw = [x for x in t["switch"]]
        switch = "-" if all(x is None for x in sw) else ", ".join(
            "none" if x is None else str(x["step"]) for x in sw) + \
            (" (advisory)" if any(x and x["advisory"] for x in sw) else "")
        wall = sum(t["wall_seconds"]) / len(t["wall_seconds"])
        steps_used = sum(t["steps_used"]) / len(t["steps_used"])
        best_val = 100 * t["best_val_accuracy_mean"]
        rows.append(f"| {m} | {len(t['seeds'])} | {_pct(t['test_accuracy_stats'])} | {diff} | "
                    f"{best_val:.2f} | {steps_used:.0f} | {reach} | {sav} | {switch} | {wall:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    check_t_table()
    print("t table ok")
