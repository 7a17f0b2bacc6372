"""A job on the plain session API, killed with SIGKILL and restarted from its
checkpoint, against a real spotterd (docs/RESTARTS.md).

Two processes (ranks 0 and 1) upload sketches without an LR. An operator
places the switch to REFINEMENT at step SWITCH after the checkpoint the job
will resume from was taken; both processes are then killed before SWITCH and
restarted from the checkpoint. Every upload after the restart must be applied
(the server's count grows by exactly what the new processes queued), the LR
and optimizer each rank followed must equal an uninterrupted reference job's
step for step (including the switch it learnt from the server after the
restart), and the run must record both restarts.
"""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import HERE
from spotter import Client

STEPS, SWITCH, EVERY = 90, 60, 10
HOLD, KILL = 30, 50  # the workers wait before these steps (session_worker.py)
WORKER = os.path.join(HERE, "session_worker.py")


def start(spotterd, run, rank, tmp, resume=False, holds=()):
    """holds: (step, gate path) pairs: the worker waits before that step
    until the gate file exists."""
    d = tmp / f"{run}-{rank}"
    d.mkdir(exist_ok=True)
    args = [sys.executable, WORKER, spotterd.target, run, str(rank), "2", str(STEPS), str(EVERY),
            str(d / "ckpt"), str(d / "progress"), str(d / ("out2" if resume else "out"))]
    if resume:
        args.append(str(d / "resume"))
    env = dict(os.environ, SPOTTER_TEST_HOLD=",".join(f"{s}:{p}" for s, p in holds))
    return subprocess.Popen(args, env=env), d


def progress(d):
    try:
        return int((d / "progress").read_text())
    except (FileNotFoundError, ValueError):
        return -1


def wait_until(cond, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def place_switch(client, run):
    d = client.override_phase(run, "force_phase", phase="refinement", effective_step=SWITCH,
                              reason="test: the switch at a fixed step").directive
    assert d.effective_step == SWITCH
    return d


def finish(procs):
    for p in procs:
        assert p.wait(timeout=120) == 0


def test_a_killed_job_resumes_exactly_where_the_reference_goes(spotterd, tmp_path):
    with Client(spotterd.target) as c:
        # The reference: uninterrupted, the same switch placed while it runs
        # (held before step HOLD until the switch is placed).
        go_ref, go_job, never = (tmp_path / n for n in ("go-ref", "go-job", "never"))
        ref = [start(spotterd, "ref", r, tmp_path, holds=[(HOLD, go_ref)]) for r in range(2)]
        wait_until(lambda: all(progress(d) >= HOLD - 1 for _, d in ref), "the reference at HOLD")
        place_switch(c, "ref")
        go_ref.touch()
        finish([p for p, _ in ref])
        reference = [json.loads((d / "out").read_text()) for _, d in ref]

        # The job to kill: checkpoints every 10 steps; the switch is placed
        # after the checkpoint of step HOLD exists, and the job dies (held
        # before step KILL) before it.
        job = [start(spotterd, "job", r, tmp_path, holds=[(HOLD, go_job), (KILL, never)])
               for r in range(2)]
        wait_until(lambda: all(progress(d) >= HOLD - 1 for _, d in job), "the job at HOLD")
        ckpts = [json.loads((d / "ckpt").read_text()) for _, d in job]
        assert all(ck["step"] == HOLD for ck in ckpts)
        place_switch(c, "job")
        go_job.touch()
        wait_until(lambda: all(progress(d) >= KILL - 1 for _, d in job),
                   "steps after the checkpoint")
        for p, _ in job:
            p.send_signal(signal.SIGKILL)
            p.wait()
        assert all(progress(d) < SWITCH for _, d in job), "killed too late for the test"
        killed_at = [progress(d) for _, d in job]
        wait_until(lambda: sum(r.connected for r in c.get_run("job").ranks) == 0,
                   "the killed streams to close")
        before = {r.rank: r.uploads for r in c.get_run("job").ranks}

        # Restart both ranks from the checkpoint they had when the switch came.
        for (_, d), ck in zip(job, ckpts):
            (d / "resume").write_text(json.dumps(ck))
        again = [start(spotterd, "job", r, tmp_path, resume=True) for r in range(2)]
        finish([p for p, _ in again])
        info = c.get_run("job")
        points = c.get_trajectory("job").points

    resumed = [json.loads((d / "out2").read_text()) for _, d in again]
    for rank in range(2):
        out, ref_out, ck = resumed[rank], reference[rank], ckpts[rank]
        assert out["flushed"] and out["rejects"] == 0
        # Every upload after the restart is applied: server count == trainer count.
        applied = next(r.uploads for r in info.ranks if r.rank == rank) - before[rank]
        assert applied == out["uploads"] == STEPS - ck["step"]
        # Step for step what the uninterrupted reference applied, the switch included.
        rec = {int(k): v for k, v in out["record"].items()}
        want = {int(k): v for k, v in ref_out["record"].items() if int(k) >= ck["step"]}
        assert rec == want
        assert [k for k in sorted(rec) if rec[k][1] == "natural_gradient"][0] == SWITCH
        assert rec[SWITCH - 1][1] == "keep" and rec[SWITCH][0] < rec[SWITCH - 1][0]
    common = set(resumed[0]["record"]) & set(resumed[1]["record"])
    assert [resumed[0]["record"][k][1] for k in common] == \
        [resumed[1]["record"][k][1] for k in common], "the ranks followed different optimizers"
    # The run says what happened: one restart per rank, and the redone steps'
    # points are marked as the first pass's.
    assert sorted((e.rank, e.resume_step) for e in info.restarts) == \
        sorted((r, ckpts[r]["step"]) for r in range(2))
    for e in info.restarts:
        assert e.redone_through >= killed_at[e.rank] - 1
    redone = [p.step for p in points if p.redone]
    lo = min(ck["step"] for ck in ckpts)
    assert redone and all(lo <= s <= max(e.redone_through for e in info.restarts)
                          for s in redone)


def test_a_resumed_session_follows_its_checkpoint_before_it_reaches_the_server(spotterd):
    from spotter import RunSession
    config = {"total_steps": 1000, "peak_lr": 0.1, "sketch_dim": 16, "sketch_rows": 8}
    with Client(spotterd.target) as c, RunSession(spotterd.target, "offline", config) as s:
        assert s.wait_for_directive(10.0)
        c.override_phase("offline", "force_phase", phase="refinement", effective_step=500)
        assert s.wait_for_directive(10.0, version=2)
        saved = s.checkpoint(400)
    # The server is unreachable (a port nothing listens on): fail-open, from the checkpoint.
    with RunSession("127.0.0.1:1", "offline", config, resume=saved, open_timeout=0.2) as cut:
        assert cut.directive_at(499).phase == "acquisition"
        assert cut.directive_at(500).phase == "refinement"
        assert cut.directive_at(500).optimizer.kind == "natural_gradient"
        assert cut.lr_at(600) == s.lr_at(600)
    try:
        RunSession("127.0.0.1:1", "offline", config, rank=1, resume=saved, open_timeout=0.2)
    except ValueError as e:
        assert "rank 0" in str(e)
    else:
        raise AssertionError("a checkpoint of another rank was accepted")
