"""spotter.Client and RunSession against the real spotterd binary."""
import time

import grpc
import numpy as np
import pytest

from spotter import Client, RunSession, SpotterError
from spotter._proto import pb

CONFIG = dict(total_steps=500, peak_lr=0.1, sketch_dim=16, sketch_rows=8, eval_every=5)


def test_unary_rpcs(spotterd):
    with Client(spotterd.target) as c:
        assert c.health() == "SERVING"
        r = c.open_run("a", **CONFIG)
        assert r.created and r.run.config.sketch_dim == 16
        assert r.run.config.phase.warmup_fraction > 0  # defaults filled in
        assert not c.open_run("a", **CONFIG).created  # idempotent
        with pytest.raises(SpotterError) as e:
            c.open_run("a", **dict(CONFIG, sketch_dim=32))
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(SpotterError) as e:
            c.open_run("b", total_steps=0, peak_lr=0.1)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(SpotterError) as e:
            c.get_run("nope")
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        assert [r.name for r in c.list_runs()] == ["a"]
        o = c.override_phase("a", "force_phase", phase="refinement", reason="test")
        assert o.directive.phase == pb.PHASE_REFINEMENT and o.directive.version == 2
        tr = c.get_trajectory("a")
        assert [d.version for d in tr.directives] == [1, 2]
        assert c.finish_run("a").state == pb.RUN_STATE_FINISHED
        events = list(c.watch_run("a", include_history=True, timeout=5))
        assert events[-1].state == pb.RUN_STATE_FINISHED
        c.delete_run("a")
        assert c.list_runs() == []


def test_session_uploads_reach_the_run_and_directives_come_back(spotterd):
    with RunSession(spotterd.target, "s", **CONFIG) as s, Client(spotterd.target) as c:
        assert s.wait_for_directive(10)
        d = s.directive_at(0)
        assert d.version == 1 and d.phase == "acquisition" and d.lr.kind == "linear"
        rng = np.random.default_rng(0)
        for step in range(60):
            s.upload_sketch(step, rng.standard_normal((6, 16)), loss=1.0, lr=s.lr_at(step))
        s.report_eval(60, {"val_loss": 0.5})
        assert s.flush(10)
        info = c.get_run("s")
        assert info.ranks[0].uploads == 60 and info.ranks[0].rows == 360
        assert info.ranks[0].last_seq == 61
        # An operator override reaches the stream, effective ahead of the rank.
        o = c.override_phase("s", "force_phase", phase="polish")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and s.stats().directives < 2:
            time.sleep(0.01)
        new = max(s.directives(), key=lambda x: x.version)
        assert new.version == o.directive.version and new.effective_step > 59
        assert s.directive_at(new.effective_step - 1).version == 1
        assert s.directive_at(new.effective_step).phase == "polish"


def test_projection_mismatch_is_permanent(spotterd):
    with Client(spotterd.target) as c:
        c.open_run("p", **CONFIG)
    s = RunSession(spotterd.target, "p", projection=pb.ProjectionSpec(seed=99), **CONFIG)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and s.error is None:
            time.sleep(0.01)
        assert s.error is not None and s.error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert not s.upload_sketch(0, np.ones((2, 16)))  # refused, training goes on
    finally:
        s.close(timeout=1)


def test_advise_mode_directives_are_advisory(spotterd):
    with RunSession(spotterd.target, "adv", mode="MODE_ADVISE", **CONFIG) as s:
        assert s.wait_for_directive(10)
        assert s.directive_at(10) is None and s.lr_at(10) is None
        assert s.advice().advisory and s.advice().version == 1
