"""torch.distributed awareness: two gloo processes train one DDP model under
the Monitor against the real spotterd (tests/python/dist_worker.py).

* An operator forces REFINEMENT (natural gradient, LR cut) and then POLISH
  while they run; every rank must switch at the same step, at the
  directive's effective_step, and the replicas must end bit-identical
  (K-FAC factors are all-reduced, gradient noise is seeded). By default
  (directives="broadcast") only rank 0 talks to the server: one stream per
  job, directives handed to rank 1 through torch.distributed at sync steps.
* spotterd dies right after an override: the job finishes, and both ranks
  applied the same switches at the same steps (or none).
* A directive rank 0 hands out after its effective step (sync steps far
  apart) is applied by every rank at the same sync step, counted as late.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import HERE
from spotter import Client

STEPS = 400
WORKER = os.path.join(HERE, "dist_worker.py")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_job(spotterd, run, outs, steps, *extra):
    port = str(free_port())
    return [subprocess.Popen([sys.executable, WORKER, str(r), "2", port, spotterd.target, run,
                              outs[r], str(steps), *extra])
            for r in range(2)]


def wait_for_step(client, run, at, procs, deadline, seen=None):
    """Until the server has seen step ``at`` of ``run``; ``seen`` collects
    the ranks the run knows meanwhile, and the most connected at once."""
    while time.monotonic() < deadline:
        try:
            info = client.get_run(run)
            if seen is not None:
                seen["ranks"] |= {r.rank for r in info.ranks}
                seen["connected"] = max(seen["connected"], sum(r.connected for r in info.ranks))
            if info.max_step >= at:
                return
        except Exception:
            pass  # the run is not open yet
        assert all(p.poll() is None for p in procs), "a rank exited early"
        time.sleep(0.02)
    raise AssertionError(f"run {run} did not reach step {at}")


def finish(procs, deadline):
    try:
        for p in procs:
            assert p.wait(timeout=max(1, deadline - time.monotonic())) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def results(outs):
    return [json.load(open(o)) for o in outs]


def assert_same_on_every_rank(r0, r1, steps):
    assert r0["steps"] == r1["steps"] == steps
    assert r0["applied"] == r1["applied"]
    assert r0["lrs"] == r1["lrs"] and r0["ng"] == r1["ng"]
    assert r0["params"] == r1["params"]


@pytest.mark.parametrize("directives,upload,apply", [
    ("broadcast", "rank0", "step"), ("broadcast", "all", "step"), ("per_rank", "all", "step"),
    ("broadcast", "rank0", "hooks")])
def test_ranks_switch_together(spotterd, tmp_path, directives, upload, apply):
    run = f"ddp-{directives}-{upload}-{apply}"
    outs = [str(tmp_path / f"rank{r}.json") for r in range(2)]
    extra = ["--upload", upload, "--directives", directives, "--apply", apply]
    procs = start_job(spotterd, run, outs, STEPS, *extra)
    forced = []
    seen = {"ranks": set(), "connected": 0}
    with Client(spotterd.target) as c:
        deadline = time.monotonic() + 240
        for phase, at in (("refinement", 50), ("polish", 200)):
            wait_for_step(c, run, at, procs, deadline, seen)
            forced.append(c.override_phase(run, "force_phase", phase=phase).directive)
        wait_for_step(c, run, 300, procs, deadline, seen)
        finish(procs, deadline)
        info = c.get_run(run)
    r0, r1 = results(outs)
    assert_same_on_every_rank(r0, r1, STEPS)
    for f in forced:
        assert f.effective_step < STEPS, "the margin pushed the switch past the run"
    # Every rank applied the same directives at the same steps: their effective steps.
    want = [[0, 1, "acquisition", False]] + [[f.effective_step, f.version, p, False]
                                             for f, p in zip(forced, ("refinement", "polish"))]
    assert r0["applied"] == want
    e = forced[0].effective_step
    # hooks mode: DirectiveLR sets the LR (no natural gradient there).
    assert r0["ng"][e - 1] is False and r0["ng"][e] is (apply == "step")
    assert r0["lrs"][e] < r0["lrs"][e - 1]
    assert info.config.world_size == 2
    ranks = {r.rank: r for r in info.ranks}
    assert ranks[0].uploads >= STEPS // 2 - 5
    s0, s1 = r0["stats"], r1["stats"]
    if directives == "broadcast":
        assert s0["directives_mode"] == s1["directives_mode"] == "broadcast"
        # One sync per sync step (every 2nd step boundary) on every rank.
        assert s0["syncs"] == s1["syncs"] == STEPS // 2
        for r, st in enumerate((s0, s1)):
            print(f"\nsync, rank {r}: median {1e6 * st['sync_median_seconds']:.0f} us, mean "
                  f"{1e6 * st['sync_seconds'] / st['syncs']:.0f} us, max "
                  f"{1e6 * st['sync_max_seconds']:.0f} us; {100 * st['sync_fraction']:.2f}% "
                  f"of {1e3 * st['step_seconds'] / STEPS:.2f} ms/step")
    else:
        assert "syncs" not in s0
    if upload == "rank0":
        # One stream per job: rank 1 never opened one.
        assert set(ranks) == seen["ranks"] == {0} and seen["connected"] == 1
        assert r1["incarnation"] is None
    else:
        assert set(ranks) == {0, 1} and ranks[1].uploads > 0 and ranks[1].last_step > 0
        assert seen["connected"] == 2


def test_spotterd_killed_after_an_override(spotterd, tmp_path):
    run, steps = "ddp-killed", 300
    outs = [str(tmp_path / f"rank{r}.json") for r in range(2)]
    procs = start_job(spotterd, run, outs, steps, "--close-timeout", "2")
    with Client(spotterd.target) as c:
        deadline = time.monotonic() + 180
        wait_for_step(c, run, 60, procs, deadline)
        forced = c.override_phase(run, "force_phase", phase="refinement").directive
    spotterd.kill()
    finish(procs, deadline)  # no hang: the job finishes without its server
    r0, r1 = results(outs)
    assert_same_on_every_rank(r0, r1, steps)
    # Both switched at the same step, or neither did.
    assert r0["applied"][0] == [0, 1, "acquisition", False]
    assert r0["applied"][1:] in ([], [[forced.effective_step, forced.version, "refinement",
                                       False]])
    assert not r0["flushed"] and r0["stats"]["session"]["connected"] is False


def test_a_late_directive_is_applied_by_every_rank_at_the_same_sync_step(spotterd, tmp_path):
    run, steps, every = "ddp-late", 260, 100
    outs = [str(tmp_path / f"rank{r}.json") for r in range(2)]
    procs = start_job(spotterd, run, outs, steps, "--sync-every", str(every), "--budget", "0.1")
    with Client(spotterd.target) as c:
        deadline = time.monotonic() + 180
        wait_for_step(c, run, 110, procs, deadline)
        forced = c.override_phase(run, "force_phase", phase="refinement").directive
        finish(procs, deadline)
    # Handed out at the sync step 200, after its effective step: late everywhere.
    assert every < forced.effective_step < 2 * every, forced
    r0, r1 = results(outs)
    assert_same_on_every_rank(r0, r1, steps)
    assert r0["applied"] == [[0, 1, "acquisition", False],
                             [2 * every, forced.version, "refinement", True]]
    assert r0["ng"].index(True) == 2 * every
    assert r0["stats"]["late_directives"] == r1["stats"]["late_directives"] == 1
    assert r0["stats"]["syncs"] == r1["stats"]["syncs"] == steps // every
