"""A two-process torch training job (DDP, gloo, Monitor in its default
broadcast mode) killed with SIGKILL and restarted from its torch checkpoint,
against a real spotterd (docs/RESTARTS.md, docs/PYTHON.md "Restarts").

The controller is held; an operator places the switch to REFINEMENT (natural
gradient, LR cut) at step SWITCH. The reference job runs uninterrupted with
that override. The job to kill saves a torch checkpoint (model, optimizer,
data generator, Monitor.state_dict()) every CKPT steps; the override is
issued after the checkpoint of step RESUME exists, both workers are killed
before SWITCH, and both restart from that checkpoint, so the resumed job
learns the switch from the server. Checked: every upload after the restart
is applied (server count equals trainer count, no rejects), the per-step LR
sequence equals the reference's step for step, both ranks switch optimizer at
SWITCH in both jobs, and the run records the restart at RESUME.
"""
import signal
import subprocess
import sys
import time

from spotter import Client
from test_distributed import WORKER, free_port, results

STEPS, SWITCH, CKPT, RESUME = 140, 100, 20, 40
RATE = "100"  # steps/s: the kill lands between RESUME + 10 and SWITCH
# The warm-up (half the run: 70 steps) raises the LR at every step around RESUME.


def start(spotterd, run, tmp, tag, resume=None):
    port = str(free_port())
    ckdir = tmp / run
    ckdir.mkdir(exist_ok=True)
    procs, outs, progress = [], [], []
    for r in range(2):
        outs.append(str(tmp / f"{run}-{tag}-{r}.json"))
        progress.append(tmp / f"{run}-{tag}-{r}.progress")
        args = [sys.executable, WORKER, str(r), "2", port, spotterd.target, run, outs[r],
                str(STEPS), "--rate", RATE, "--budget", "0.2", "--warmup", "0.5", "--ckpt-dir", str(ckdir),
                "--ckpt-every", str(CKPT), "--progress", str(progress[r])]
        if resume is not None:
            args += ["--resume", str(resume)]
        procs.append(subprocess.Popen(args))
    return procs, outs, progress


def step_of(path):
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return -1


def wait_until(cond, what, procs, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        assert all(p.poll() is None for p in procs), f"a worker exited before {what}"
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def finish(procs):
    try:
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def place_switch(client, run):
    d = client.override_phase(run, "force_phase", phase="refinement", effective_step=SWITCH,
                              reason="test: the switch at a fixed step").directive
    assert d.effective_step == SWITCH
    return d


def test_a_killed_job_resumes_from_its_torch_checkpoint_as_if_never_killed(spotterd, tmp_path):
    with Client(spotterd.target) as c:
        # The reference: uninterrupted, the same switch placed while it runs.
        procs, outs, progress = start(spotterd, "ref", tmp_path, "a")
        wait_until(lambda: all(step_of(p) >= RESUME + 5 for p in progress), "ref at 45", procs)
        place_switch(c, "ref")
        finish(procs)
        ref = results(outs)

        # The job to kill: the switch is placed once the checkpoint of step
        # RESUME exists, and both workers die before it.
        procs, outs, progress = start(spotterd, "job", tmp_path, "a")
        ckpt = tmp_path / "job" / f"ckpt-{RESUME}.pt"
        wait_until(lambda: ckpt.exists() and all(step_of(p) >= RESUME + 5 for p in progress),
                   "the checkpoint", procs)
        place_switch(c, "job")
        wait_until(lambda: all(step_of(p) >= RESUME + 10 for p in progress), "job at 50", procs)
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
        killed_at = [step_of(p) for p in progress]
        assert max(killed_at) < SWITCH, f"killed too late for the test: {killed_at}"
        deadline = time.monotonic() + 30
        while sum(r.connected for r in c.get_run("job").ranks) and time.monotonic() < deadline:
            time.sleep(0.02)  # the killed stream closes
        before = {r.rank: r.uploads for r in c.get_run("job").ranks}

        # Restart both ranks from rank 0's checkpoint of step RESUME.
        procs, outs2, _ = start(spotterd, "job", tmp_path, "b", resume=RESUME)
        finish(procs)
        info = c.get_run("job")
    resumed = results(outs2)

    for rank in range(2):
        out, want = resumed[rank], ref[rank]
        assert out["steps"] == STEPS and len(out["lrs"]) == STEPS
        # Step for step the reference's LR and optimizer (steps < RESUME from
        # the killed incarnation, through the checkpoint; the rest from the
        # resumed one), the switch it learnt from the server included.
        assert out["lrs"] == want["lrs"]
        assert out["lrs"][RESUME - 1] < out["lrs"][RESUME] < out["lrs"][RESUME + 1]
        assert out["ng"] == want["ng"]
        assert want["ng"].index(True) == out["ng"].index(True) == SWITCH
        assert out["lrs"][SWITCH] < out["lrs"][SWITCH - 1]
        assert [a[0] for a in out["applied"]] == [a[0] for a in want["applied"]] == [0, SWITCH]
        assert not any(a[3] for a in out["applied"])  # nothing late
    assert resumed[0]["ng"] == resumed[1]["ng"] and resumed[0]["lrs"] == resumed[1]["lrs"]
    # Restored model, optimizer, data order and directives: the replicas end
    # where the uninterrupted job's did.
    assert resumed[0]["params"] == resumed[1]["params"] == ref[0]["params"]

    # Every upload of the resumed job was applied: server count == trainer count.
    s = resumed[0]["stats"]
    assert resumed[0]["flushed"]
    assert s["session"]["rejects"] == 0
    assert s["sketches"] == s["session"]["acked"] == (STEPS - RESUME) // 2
    after = {r.rank: r.uploads for r in info.ranks}
    assert after[0] - before[0] == s["sketches"]
    assert set(after) == {0}  # one stream per job: rank 1 never connected
    # The run says what happened.
    assert [(e.rank, e.resume_step) for e in info.restarts] == [(0, RESUME)]
    assert info.restarts[0].redone_through >= RESUME


def test_a_resumed_monitor_continues_bit_for_bit_offline_with_its_kfac_state(spotterd):
    """One process: Monitor(resume=state_dict) after the switch to natural
    gradient, with the server unreachable, continues exactly as the Monitor
    it was taken from (directives, LR, K-FAC factors and inverses restored)."""
    import io

    import torch
    import torch.nn.functional as F

    import digits
    from spotter.torch import Monitor

    train, _ = digits.load()
    config = {"sketch_rows": 16, "phase": {"min_dwell_steps": 1_000_000, "warmup_fraction": 0.5,
                                           "kfac_factor_interval": 3, "kfac_inverse_interval": 9}}

    def build(server, **kw):
        torch.manual_seed(0)
        model = digits.mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        mon = Monitor(model, opt, run="solo", server=server, total_steps=60, sketch_every=2,
                      sketch_dim=32, config=config, **kw)
        return model, opt, mon

    def train_steps(model, opt, mon, gen, n):
        lrs = []
        for _ in range(n):
            idx = torch.randint(0, len(train[0]), (32,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(train[0][idx]), train[1][idx]).backward()
            mon.step()
            lrs.append(opt.param_groups[0]["lr"])
        return lrs

    model, opt, mon = build(spotterd.target)
    with Client(spotterd.target) as c:
        c.override_phase("solo", "force_phase", phase="refinement", effective_step=12)
    assert mon.session.wait_for_directive(10, version=2)
    gen = torch.Generator().manual_seed(1)
    train_steps(model, opt, mon, gen, 30)
    assert mon.natural_gradient and mon.kfac.ready
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                "spotter": mon.state_dict()}, buf)
    lrs = train_steps(model, opt, mon, gen, 15)
    mon.close()

    buf.seek(0)
    saved = torch.load(buf)
    model2, opt2, mon2 = build("127.0.0.1:1", resume=saved["spotter"], wait_for_server=0.2,
                               session_options={"open_timeout": 0.2})
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    gen2 = torch.Generator()
    gen2.set_state(saved["gen"])
    assert mon2.step_count == 30 and mon2.natural_gradient and not mon2.session.connected
    assert train_steps(model2, opt2, mon2, gen2, 15) == lrs
    assert [(a.step, a.version) for a in mon2.applied] == [(a.step, a.version) for a in mon.applied]
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    with __import__("pytest").raises(RuntimeError, match="before the first step"):
        mon2.load_state_dict(saved["spotter"])
    mon2.close(timeout=0.5)


def test_a_saved_session_checkpoint_serves_every_rank():
    from spotter.schedule import Directive, LrSchedule, Optimizer, decode_checkpoint, \
        encode_checkpoint
    from spotter.torch.sync import session_resume
    d = Directive(3, 40, "refinement", LrSchedule("constant", 0, 0, 0.01, 0.01),
                  Optimizer("natural_gradient", 1e-3, 3, 9))
    saved = encode_checkpoint("job", 0, 30, [d])
    assert session_resume(saved, "job", 0) == saved
    assert decode_checkpoint(session_resume(saved, "job", 2), "job", 2) == (30, [d])
    assert session_resume(None, "job", 1) is None
