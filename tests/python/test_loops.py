"""Existing training loops: DirectiveLR (directives as a torch LR scheduler)
and the Monitor's hooks mode (apply="hooks": the loop keeps optimizer.step(),
its scheduler, gradient accumulation and AMP), against the real spotterd."""
import io
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spotter import Client, directive_in_force
from spotter.schedule import Directive, LrSchedule, Optimizer
from spotter.torch import DirectiveLR, Monitor


def problem(seed=0, lrs=(0.1, 0.01)):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": lrs[0]},
                           {"params": model[2].parameters(), "lr": lrs[1]}], momentum=0.9)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    return model, opt, x, y


def count_steps(opt):
    """Wraps opt.step (a bound method, as torch's schedulers expect) to count
    its calls."""
    calls = [0]
    step = opt.step

    def counted(self, *a, **k):
        calls[0] += 1
        return step(*a, **k)
    opt.step = types.MethodType(counted, opt)
    return calls


class Fixed:
    """A directive source holding a fixed list (what a session's mailbox holds)."""

    def __init__(self, *directives):
        self.ds = list(directives)

    def directive_at(self, step):
        return directive_in_force(self.ds, step)


def fixed(version, eff, lr, advisory=False):
    return Directive(version=version, effective_step=eff, phase="refinement", lr=lr,
                     optimizer=Optimizer(), advisory=advisory)


def test_directive_lr_falls_back_before_the_effective_step_and_round_trips():
    _, opt, _, _ = problem()
    fb = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    sch = LrSchedule("linear", 5, 15, 0.2, 0.0)
    src = Fixed(fixed(1, 7, sch),
                fixed(2, 9, LrSchedule("constant", start_lr=9.0), advisory=True))
    sched = DirectiveLR(opt, src, fallback=fb)
    _, ref_opt, _, _ = problem()
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=3, gamma=0.5)
    seen = []
    for t in range(20):
        want = [sch.at(t) * r for r in (1.0, 0.1)] if t >= 7 \
            else [g["lr"] for g in ref_opt.param_groups]
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(want, rel=1e-12), t
        assert sched.get_last_lr() == pytest.approx(want, rel=1e-12)
        seen.append(want)
        opt.step()
        ref_opt.step()
        sched.step()
        ref.step()
        if t == 11:
            state = sched.state_dict()
    # The fallback stepped on its own LRs: it is still StepLR's sequence.
    assert fb.get_last_lr() == pytest.approx([g["lr"] for g in ref_opt.param_groups])
    # state_dict: picklable (no monitor/session/fallback object), and a fresh
    # scheduler resumes the same sequence from the saved step.
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf)
    assert state["last_epoch"] == 12 and "source" not in state and "fallback" not in state
    _, opt3, _, _ = problem()
    fb3 = torch.optim.lr_scheduler.StepLR(opt3, 3, 0.5)
    s3 = DirectiveLR(opt3, src, fallback=fb3)
    s3.load_state_dict(state)
    assert fb3.last_epoch == 12
    for t in range(13, 20):
        opt3.step()
        s3.step()
        assert [g["lr"] for g in opt3.param_groups] == pytest.approx(seen[t], rel=1e-12), t
    # Without a fallback: the initial LRs; without a source: never a directive.
    _, opt4, _, _ = problem()
    s4 = DirectiveLR(opt4, None)
    opt4.step()
    s4.step()
    assert s4.get_last_lr() == [0.1, 0.01]


def test_directive_lr_yields_each_directives_lr_from_its_effective_step(spotterd):
    model, opt, x, y = problem()
    calls = count_steps(opt)
    mon = Monitor(model, opt, run="lr", server=spotterd.target, total_steps=200, peak_lr=0.1,
                  sketch_every=5, sketch_dim=16, apply="hooks")
    sched = DirectiveLR(opt, mon, fallback=torch.optim.lr_scheduler.StepLR(opt, 10, 0.5))
    forced = None
    try:
        assert mon.session.wait_for_directive(10)
        v1 = mon.session.directive_at(0)
        assert v1.version == 1 and v1.effective_step == 0 and v1.lr.kind == "linear"
        lrs = []
        steps, t = 60, 0  # at least 10 steps past the forced directive's effective step
        while t < steps:
            if t == 20:
                with Client(spotterd.target) as c:
                    forced = c.override_phase("lr", "force_phase", phase="polish").directive
                assert mon.session.wait_for_directive(10, version=forced.version)
                steps = max(steps, forced.effective_step + 10)
            lrs.append([g["lr"] for g in opt.param_groups])
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            assert mon.on_step_end(loss)
            t += 1
        v2 = max(mon.session.directives(), key=lambda d: d.version)
        assert v2.version == forced.version and v2.phase == "polish"
        eff = v2.effective_step
        # The server places the directive at its highest step plus the
        # delivery margin, which may already lie behind the loop (the upload
        # of step 20 still in flight): then it applies from the step the
        # Monitor adopted it at, right after it arrived (docs/PYTHON.md).
        assert [a.version for a in mon.applied] == [1, v2.version]
        start, late = mon.applied[1].step, mon.applied[1].late
        if eff > 20:
            assert (start, late) == (eff, False)
        else:  # late: from the step it arrived at (the loop waited for it at 20)
            assert late and 20 <= start <= 21, (eff, start)
        assert start < steps
        for t, got in enumerate(lrs):
            d = v2 if t >= start else v1
            assert got == pytest.approx([d.lr.at(t), d.lr.at(t) * 0.1], rel=1e-12), t
        assert mon.applied[0].step == 0
        assert calls[0] == steps  # the loop's own calls, none by the Monitor
        assert mon.session.flush(10)
        with Client(spotterd.target) as c:
            assert c.get_run("lr").ranks[0].uploads == mon.stats()["sketches"] == -(-steps // 5)
    finally:
        mon.close()


def test_advise_mode_keeps_the_fallback(spotterd):
    model, opt, x, y = problem()
    _, ref_opt, _, _ = problem()
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, 30)
    mon = Monitor(model, opt, run="adv", server=spotterd.target, total_steps=200, mode="advise",
                  sketch_every=5, sketch_dim=16, apply="hooks")
    sched = DirectiveLR(opt, mon, fallback=torch.optim.lr_scheduler.CosineAnnealingLR(opt, 30))
    try:
        assert mon.session.wait_for_directive(10)
        assert mon.advice is not None and mon.directive is None
        for t in range(30):
            assert [g["lr"] for g in opt.param_groups] == \
                pytest.approx([g["lr"] for g in ref_opt.param_groups], rel=1e-12)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            ref_opt.step()
            sched.step()
            ref.step()
            mon.on_step_end(loss)
        assert mon.applied == []
    finally:
        mon.close()


def test_hooks_mode_plain_loop_uploads_and_never_steps(spotterd):
    model, opt, x, y = problem()
    calls = count_steps(opt)
    mon = Monitor(model, opt, run="plain", server=spotterd.target, total_steps=100,
                  sketch_every=4, sketch_dim=16, apply="hooks")
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)  # the user's own schedule
    try:
        with pytest.raises(RuntimeError):
            mon.step()
        lrs = []
        for t in range(40):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            before = calls[0]
            opt.step()
            sched.step()
            assert calls[0] == before + 1
            assert mon.on_step_end(loss)
            lrs.append(mon.lr)
        assert calls[0] == 40
        assert lrs == pytest.approx([0.1 * 0.5 ** (t // 10) for t in range(40)])  # LR the step used
        st = mon.stats()
        assert st["step"] == 40 and st["sketches"] == 10 and st["sketch_rows"] == 320
        assert mon.session.flush(10)
        with Client(spotterd.target) as c:
            r = c.get_run("plain").ranks[0]
        assert r.uploads == 10 and r.rows == 320 and r.last_step >= 36
    finally:
        mon.close()


@pytest.mark.parametrize("sample,rows_per_sketch", [("per_example", 32), ("per_microbatch", 4)])
def test_gradient_accumulation_attributes_micro_steps_to_optimizer_steps(spotterd, sample,
                                                                          rows_per_sketch):
    model, opt, x, y = problem()
    calls = count_steps(opt)
    run = "acc-" + sample.replace("_", "-")
    mon = Monitor(model, opt, run=run, server=spotterd.target, total_steps=100,
                  sketch_every=3, sketch_dim=16, sample=sample, apply="hooks")
    sched = DirectiveLR(opt, mon)
    uploaded = []
    upload = mon.session.upload_sketch

    def spy(step, rows, **kw):
        uploaded.append((step, rows.shape[0], kw["samples_per_row"]))
        return upload(step, rows, **kw)
    mon.session.upload_sketch = spy
    try:
        accum, steps = 4, 0
        for i in range(4 * 15):  # Lightning-style: the hook runs on every micro-batch
            xb, yb = x[(i % 4) * 8:(i % 4 + 1) * 8], y[(i % 4) * 8:(i % 4 + 1) * 8]
            (F.cross_entropy(model(xb), yb) / accum).backward()
            if (i + 1) % accum == 0:
                opt.step()
                sched.step()
                opt.zero_grad()
                steps += 1
            ended = mon.on_step_end(global_step=steps)
            assert ended == ((i + 1) % accum == 0)
        assert calls[0] == steps == 15 and mon.step_count == 15
        spr = 1 if sample == "per_example" else 8
        assert uploaded == [(t, rows_per_sketch, spr) for t in range(0, 15, 3)]
        assert mon.session.flush(10)
        with Client(spotterd.target) as c:
            r = c.get_run(run).ranks[0]
        assert r.uploads == 5 and r.rows == 5 * rows_per_sketch and r.last_step >= 12
    finally:
        mon.close()


class FakeScaler:
    """A GradScaler stand-in (CPU torch has no enabled one): the scale doubles
    at every update(), i.e. between the step's backward and on_step_end()."""

    def __init__(self, scale):
        self.s = scale

    def is_enabled(self):
        return True

    def get_scale(self):
        return self.s

    def update(self):
        self.s *= 2


def test_grad_scaler_sketches_are_unscaled(spotterd):
    got = {}
    for name, scaler in (("unscaled", None), ("scaled", FakeScaler(1024.0))):
        model, opt, x, y = problem()
        mon = Monitor(model, opt, run=name, server=spotterd.target, total_steps=100,
                      sketch_every=2, sketch_dim=16, apply="hooks", grad_scaler=scaler)
        rows = got[name] = []
        upload = mon.session.upload_sketch
        mon.session.upload_sketch = lambda step, r, **kw: rows.append(r.clone()) or upload(step, r, **kw)
        try:
            for t in range(6):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                (loss * (scaler.s if scaler else 1.0)).backward()
                if scaler:
                    for p in model.parameters():
                        p.grad /= scaler.s
                opt.step()
                if scaler:
                    scaler.update()
                mon.on_step_end(loss)
        finally:
            mon.close()
    assert len(got["scaled"]) == len(got["unscaled"]) == 3
    for a, b in zip(got["scaled"], got["unscaled"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class Arrives:
    """The Monitor's session with directives that arrive when the test says
    (everything else is the real session's)."""

    def __init__(self, session):
        self._s, self.extra = session, []

    def __getattr__(self, name):
        return getattr(self._s, name)

    def directives(self):
        return list(self._s.directives()) + self.extra


def test_hooks_mode_late_directive_applies_from_the_first_step_whose_lr_is_unset(spotterd):
    # A directive can arrive past its effective step (a loaded CI machine);
    # in hooks mode DirectiveLR sets step t + 1's LR at sched.step(), before
    # on_step_end(t), so a directive arriving during step t applies from
    # t + 1, and the Monitor records that step (it once recorded t, the LR of
    # step t being the old directive's).
    model, opt, x, y = problem()
    mon = Monitor(model, opt, run="late", server=spotterd.target, total_steps=200, peak_lr=0.1,
                  sketch_every=5, sketch_dim=16, apply="hooks")
    sched = DirectiveLR(opt, mon)
    try:
        assert mon.session.wait_for_directive(10)
        v1 = mon.session.directive_at(0)
        mon.session = Arrives(mon.session)
        late = fixed(v1.version + 1, 5, LrSchedule("constant", start_lr=0.003))
        lrs = []
        for t in range(30):
            if t == 20:
                mon.session.extra.append(late)  # arrives during step 20
            lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            assert mon.on_step_end(loss)
        assert [(a.version, a.step, a.late) for a in mon.applied] == \
            [(v1.version, 0, False), (late.version, 21, True)]
        assert lrs[:21] == pytest.approx([v1.lr.at(t) for t in range(21)], rel=1e-12)
        assert lrs[21:] == pytest.approx([0.003] * 9, rel=1e-12)
        assert mon.applied[1].lr == pytest.approx(0.003, rel=1e-12)
    finally:
        mon.close()
