"""The plain session API against a real spotterd: what a trainer that calls
RunSession.upload_sketch directly (no Monitor) gets applied.

A missing learning rate means "not given", as a missing loss does: spotterd
applies the upload, and a trajectory point shows the latest LR the run's ranks
gave (NaN until one did). Infinities are refused locally and never sent.
"""
import math
import time

import numpy as np

from spotter import Client, RunSession

K = 16


def rows(rng, m=4):
    return rng.standard_normal((m, K)).astype(np.float32)


def test_uploads_without_lr_are_all_applied(spotterd):
    rng = np.random.default_rng(0)
    config = {"total_steps": 1000, "peak_lr": 0.1, "sketch_dim": K, "sketch_rows": 8,
              "eval_every": 5, "mode": "MODE_ADVISE"}
    with RunSession(spotterd.target, "no-lr", config) as s:
        for step in range(20):
            assert s.upload_sketch(step, rows(rng), loss=1.0)  # no lr
        assert s.flush(10.0)
        stats = s.stats()
    assert stats.rejects == 0 and stats.dropped_invalid == 0
    with Client(spotterd.target) as c:
        info = c.get_run("no-lr")
        assert info.ranks[0].uploads == 20  # the server applied every one
        assert info.ranks[0].last_seq == 20
        points = c.get_trajectory("no-lr").points
    assert points, "evaluations ran on the uploads"
    assert all(math.isnan(p.lr) for p in points)  # not given, not made up
    assert all(p.loss == 1.0 for p in points)


def wait_for_point(client, run, step, timeout=10.0):
    """The run's points once one is at `step` or later (evaluations run on the
    server's pool after the uploads that make them due)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        points = list(client.get_trajectory(run).points)
        if points and points[-1].step >= step:
            return points
        time.sleep(0.05)
    raise AssertionError(f"no point of {run} reached step {step} in {timeout} s")


def test_a_later_lr_shows_on_the_points(spotterd):
    rng = np.random.default_rng(1)
    config = {"total_steps": 1000, "peak_lr": 0.1, "sketch_dim": K, "sketch_rows": 8,
              "eval_every": 5}
    with RunSession(spotterd.target, "late-lr", config) as s, Client(spotterd.target) as c:
        for step in range(10):
            assert s.upload_sketch(step, rows(rng), loss=None, lr=None)
        assert s.flush(10.0)
        before = wait_for_point(c, "late-lr", 5)
        assert all(math.isnan(p.lr) for p in before)
        for step in range(10, 20):
            assert s.upload_sketch(step, rows(rng), lr=0.05)
        assert s.flush(10.0)
        assert wait_for_point(c, "late-lr", 15)[-1].lr == 0.05
        # Left out again: the points keep the latest LR given.
        for step in range(20, 30):
            assert s.upload_sketch(step, rows(rng))
        assert s.flush(10.0)
        after = wait_for_point(c, "late-lr", 25)
        assert c.get_run("late-lr").ranks[0].uploads == 30
    assert all(p.lr == 0.05 for p in after if p.step >= 20)


def test_infinite_values_are_refused_locally(spotterd):
    rng = np.random.default_rng(2)
    config = {"total_steps": 100, "peak_lr": 0.1, "sketch_dim": K, "sketch_rows": 8}
    with RunSession(spotterd.target, "inf", config) as s:
        assert not s.upload_sketch(0, rows(rng), lr=math.inf)
        assert not s.upload_sketch(0, rows(rng), loss=-math.inf)
        assert s.upload_sketch(0, rows(rng), lr=0.1)
        assert s.flush(10.0)
        assert s.stats().dropped_invalid == 2
    with Client(spotterd.target) as c:
        assert c.get_run("inf").ranks[0].uploads == 1


def test_every_call_carries_the_run_header(tmp_path):
    """Against a spotterd that requires x-spotter-run (a proxy routes on it,
    docs/SCALING.md): the session's OpenRun and stream and every run-scoped
    Client call carry it, so none is refused; a raw call without it is."""
    import grpc
    import pytest
    from conftest import spotterd_path
    from spotter import SpotterError
    from spotter._proto import pb, pb_grpc
    from spotter.testing import Spotterd
    server = Spotterd(spotterd_path(), args=["--require_run_header"], workdir=str(tmp_path))
    try:
        rng = np.random.default_rng(1)
        config = {"total_steps": 1000, "peak_lr": 0.1, "sketch_dim": K, "sketch_rows": 8,
                  "eval_every": 5}
        with RunSession(server.target, "routed", config) as s:
            for step in range(10):
                assert s.upload_sketch(step, rows(rng), loss=1.0)
            assert s.flush(10.0)
            assert s.stats().rejects == 0
        with Client(server.target) as c:
            assert c.get_run("routed").ranks[0].uploads == 10
            assert c.get_trajectory("routed").points
            assert [r.name for r in c.list_runs()] == ["routed"]
            c.override_phase("routed", "force_phase", phase="polish")
            events = []
            with pytest.raises(SpotterError) as ended:  # a watch runs until its deadline
                for ev in c.watch_run("routed", include_history=True, timeout=1.0):
                    events.append(ev)
            assert ended.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert events, "the watch was admitted and sent the run's history"
            c.finish_run("routed")
            with grpc.insecure_channel(server.target) as ch:
                with pytest.raises(grpc.RpcError) as e:
                    pb_grpc.SpotterServiceStub(ch).GetRun(pb.GetRunRequest(name="routed"),
                                                          timeout=5)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "x-spotter-run" in e.value.details()
            c.delete_run("routed")
            with pytest.raises(SpotterError) as missing:
                c.get_run("routed")
            assert missing.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()
