"""End to end: the real spotterd binary, a real model on real data (digits,
CPU), the three-line Monitor loop. Checks that sketches arrive, the trajectory
grows, the phase controller fires ACQUISITION -> REFINEMENT on its own (with
PhaseConfig thresholds loosened for a 600-step run), the trainer applies that
directive exactly at its effective_step, training goes on when the server is
killed, and the session reconnects when a server comes back on the port."""
import logging
import time

import torch
import torch.nn.functional as F

import digits
from conftest import spotterd_path
from spotter import Client, directive_in_force
from spotter._proto import pb
from spotter.testing import Spotterd
from spotter.torch import Monitor

# Thresholds for a short run: evaluations every 10 steps, a 2-evaluation
# window, one confirmation, the rank fraction bound off (<= 1), and a rank /
# PR plateau test that only excludes wild swings. The loss must still be
# falling. The trainer is paced to ~250 steps/s and the delivery budget is 1 s,
# so effective steps land ~250 steps ahead (rate x budget + upload gap): room
# for a stalled CI machine, and still inside the run.
PHASE = {"window_evals": 2, "confirm_evals": 1, "rank_fraction_max": 1.0,
         "plateau_epsilon": 5.0, "id_drop_threshold": 5.0, "loss_decrease_min": 0.0,
         "min_dwell_steps": 20, "warmup_fraction": 0.1, "refine_budget_fraction": 0.9,
         "delivery_budget_seconds": 1.0, "kfac_factor_interval": 5, "kfac_inverse_interval": 20}
TOTAL = 1200


def test_end_to_end(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="spotter")
    torch.manual_seed(0)
    train, val = digits.load()
    server = Spotterd(spotterd_path(), workdir=str(tmp_path))
    port = server.port
    model = digits.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mon = Monitor(model, opt, run="e2e-digits", server=server.target, total_steps=TOTAL,
                  sketch_every=2, sketch_dim=64,
                  config={"sketch_rows": 32, "eval_every": 10, "steps_per_epoch": 25, "phase": PHASE},
                  session_options={"backoff_initial": 0.05, "backoff_max": 0.5})
    client = Client(server.target)
    gen = torch.Generator().manual_seed(1)
    points_seen = []
    killed_at = None
    restarted = None
    try:
        assert mon.directive is not None and mon.directive.phase == "acquisition"
        step = 0
        while step < TOTAL and not mon.should_stop:
            t0 = time.monotonic()
            idx = torch.randint(0, len(train[0]), (64,), generator=gen)
            opt.zero_grad()
            loss = F.cross_entropy(model(train[0][idx]), train[1][idx])
            loss.backward()
            mon.step(loss)
            time.sleep(max(0.0, 1 / 250 - (time.monotonic() - t0)))
            step = mon.step_count
            if step % 25 == 0:
                mon.report_eval({"val_loss": digits.val_loss(model, val)})
            if killed_at is None and step % 50 == 0:
                points_seen.append(client.get_run("e2e-digits").points)
            if killed_at is None and mon.natural_gradient and step >= mon.applied[-1].step + 40:
                # Refinement is running: look at the server's record, then crash it.
                info = client.get_run("e2e-digits")
                traj = client.get_trajectory("e2e-digits")
                server.kill()
                killed_at = step
                known = mon.session.directives()
            if killed_at is not None and restarted is None and step == killed_at + 100:
                # Training went on for 100 steps under the directives it held
                # when the server died (the last one may take effect later).
                d_last = directive_in_force(known, step - 1)
                assert opt.param_groups[0]["lr"] == d_last.lr.at(step - 1)
                assert mon.natural_gradient == (d_last.optimizer.kind == "natural_gradient")
                assert not mon.session.connected
                restarted = Spotterd(spotterd_path(), workdir=str(tmp_path),
                                     listen=f"127.0.0.1:{port}")
        assert killed_at is not None, f"no natural-gradient phase by step {step}: {mon.applied}"
        assert step == TOTAL or mon.should_stop

        # 1. Sketches arrived and the trajectory grew while the run was live.
        rank = info.ranks[0]
        assert rank.uploads >= 0.9 * killed_at / 2 and rank.rows >= 64 * rank.uploads * 0.9
        assert rank.rejects == 0
        assert points_seen[-1] > points_seen[0] >= 0 and len(points_seen) >= 3
        assert len(traj.points) >= killed_at // 10 - 3
        last = traj.points[-1]
        assert last.covariance.effective_rank.value > 0 and last.covariance.participation_ratio.value > 0
        # 2. The controller moved to REFINEMENT on its own, with its evidence.
        t = [t for t in traj.transitions if t.to_phase == pb.PHASE_REFINEMENT]
        assert t and t[0].cause == pb.CAUSE_AUTOMATIC and t[0].from_phase == pb.PHASE_ACQUISITION
        assert "effective_rank" in t[0].evidence and "loss_decrease_per_epoch" in t[0].evidence
        # 3. The trainer applied it exactly at its effective step.
        d = [d for d in traj.directives if d.version == t[0].directive_version][0]
        applied = {a.version: a for a in mon.applied if a.generation == 0}  # before the restart
        assert d.version in applied, mon.applied
        a = applied[d.version]
        assert (a.step, a.late, a.optimizer) == (d.effective_step, False, "natural_gradient")
        assert a.lr == pytest_approx(d.lr.start_lr)
        # 4. Training went on after the kill, and the session came back to a
        # new server on the same port (which re-created the run).
        assert restarted is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not mon.session.connected:
            time.sleep(0.05)
        st = mon.session.stats()
        assert mon.session.connected and st.reconnects >= 1
        assert mon.session.flush(10)
        with Client(restarted.target) as c2:
            assert c2.get_run("e2e-digits").ranks[0].uploads > 0
        assert digits.val_loss(model, val) < 0.5
    finally:
        mon.close(timeout=2)
        client.close()
        server.stop()
        if restarted is not None:
            restarted.stop()


def pytest_approx(x):
    import pytest
    return pytest.approx(x, rel=1e-12)
