"""torch.distributed awareness: two gloo processes train one DDP model under
the Monitor against the real spotterd. An operator forces REFINEMENT (natural
gradient, LR cut) and then POLISH while they run; every rank must switch at
the same step, at the directive's effective_step, and the replicas must end
bit-identical (K-FAC factors are all-reduced, gradient noise is seeded)."""
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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("upload", ["rank0", "all"])
def test_ranks_switch_together(spotterd, tmp_path, upload):
    run = f"ddp-{upload}"
    port = str(free_port())
    outs = [str(tmp_path / f"rank{r}.json") for r in range(2)]
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "dist_worker.py"), str(r), "2", port,
                               spotterd.target, run, upload, outs[r], str(STEPS)])
             for r in range(2)]
    forced = []
    with Client(spotterd.target) as c:
        deadline = time.monotonic() + 240
        for phase, at in (("refinement", 50), ("polish", 200)):
            while time.monotonic() < deadline:
                try:
                    if c.get_run(run).max_step >= at:
                        break
                except Exception:
                    pass  # the run is not open yet
                assert all(p.poll() is None for p in procs), "a rank exited early"
                time.sleep(0.02)
            forced.append(c.override_phase(run, "force_phase", phase=phase).directive)
        for p in procs:
            assert p.wait(timeout=max(1, deadline - time.monotonic())) == 0
        info = c.get_run(run)
    r0, r1 = [json.load(open(o)) for o in outs]
    assert r0["steps"] == r1["steps"] == STEPS
    for f in forced:
        assert f.effective_step < STEPS, "the margin pushed the switch past the run"
    # Every rank applied the same directives at the same steps: their effective steps.
    want = [[0, 1, "acquisition", False]] + [[f.effective_step, f.version, p, False]
                                             for f, p in zip(forced, ("refinement", "polish"))]
    assert r0["applied"] == r1["applied"] == want
    assert r0["lrs"] == r1["lrs"] and r0["ng"] == r1["ng"]
    e = forced[0].effective_step
    assert r0["ng"][e - 1] is False and r0["ng"][e] is True
    assert r0["params"] == r1["params"]
    # Who uploaded: rank 0 only, or both; both ranks are known to the run.
    ranks = {r.rank: r for r in info.ranks}
    assert set(ranks) == {0, 1}
    assert ranks[0].uploads >= STEPS // 2 - 5
    assert (ranks[1].uploads > 0) == (upload == "all")
    assert ranks[1].last_step > 0  # heartbeats or uploads carried rank 1's step
