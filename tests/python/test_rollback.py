"""The guarded switch end to end (docs/PHASES.md, "Guarded switch and
rollback"): the real spotterd, two ranks (two Monitors with identical
replicas of a digits MLP, stepping in lockstep like DDP, each with its own
session and per-rank directives). The controller switches to natural gradient
on its own; right after the switch the trainer's weights blow up (what a
natural-gradient step with too little damping does: every weight pushed by
noise of std 2), so
the real loss jumps far above its pre-switch level. The server must roll the
switch back; both ranks must restore the snapshot taken at the switch at the
same step (the rollback's effective step), make no update there, and go on
first-order at the lower LR while the loss comes back down."""
import math
import time
import urllib.request

import pytest
import torch
import torch.nn.functional as F

import digits
from conftest import spotterd_path
from spotter import Client
from spotter._proto import pb
from spotter.testing import Spotterd
from spotter.torch import Monitor

# As test_e2e.py: thresholds loosened so the switch fires in a short run;
# a guard of 100 steps, a margin of 100% (the blow-up is far beyond it);
# delivery budget 0.5 s. 64 sketch rows (of k = 64) keep r90 uncensored.
PHASE = {"window_evals": 2, "confirm_evals": 1, "rank_fraction_max": 1.0,
         "plateau_epsilon": 5.0, "id_drop_threshold": 5.0, "loss_decrease_min": 0.0,
         "min_dwell_steps": 20, "warmup_fraction": 0.1, "refine_budget_fraction": 0.9,
         "delivery_budget_seconds": 0.5, "kfac_factor_interval": 5, "kfac_inverse_interval": 20,
         "rollback_window_steps": 100, "rollback_loss_margin": 1.0, "rollback_lr_factor": 0.5,
         "rollback_max_retries": 0}
TOTAL = 1000
BLOWUP_AFTER = 5  # steps after the switch


def scrape(server, name):
    """The value of metric ``name`` (no labels) on spotterd's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


# "noise": weights pushed by noise of std 2, the loss jumps about a hundredfold
# (the level test fires). "inf": pushed to infinity, the loss is NaN; the
# Monitor reports it (SketchBatch.loss_non_finite) and the guard fires on it.
@pytest.mark.parametrize("blowup", [2.0, math.inf], ids=["noise", "inf"])
def test_natural_gradient_blowup_is_rolled_back_on_every_rank(tmp_path, blowup):
    torch.manual_seed(0)
    train, _ = digits.load()
    server = Spotterd(spotterd_path(), workdir=str(tmp_path))
    ranks = []
    for r in range(2):
        torch.manual_seed(0)  # identical replicas
        model = digits.mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        mon = Monitor(model, opt, run="rollback", server=server.target, total_steps=TOTAL,
                      rank=r, world_size=2, directives="per_rank", upload="all",
                      sketch_every=2, sketch_dim=64,
                      snapshot_dir=str(tmp_path) if r == 1 else None,  # disk and memory
                      config={"sketch_rows": 64, "eval_every": 10, "steps_per_epoch": 25,
                              "phase": PHASE})
        ranks.append((model, opt, mon))
    client = Client(server.target)
    gen = torch.Generator().manual_seed(1)
    losses = []
    before = [None, None]     # each rank's state before the current step
    snapshot = [None, None]   # the state the guard saved (before the switch step's update)
    blown_at = None
    try:
        step = 0
        while step < TOTAL and not ranks[0][2].should_stop:
            t0 = time.monotonic()
            idx = torch.randint(0, len(train[0]), (64,), generator=gen)
            for r, (model, opt, mon) in enumerate(ranks):
                before[r] = {k: v.clone() for k, v in model.state_dict().items()}
                opt.zero_grad()
                loss = F.cross_entropy(model(train[0][idx]), train[1][idx])
                loss.backward()
                mon.step(loss)
                if snapshot[r] is None and mon.guard.snapshot_step == step:
                    snapshot[r] = before[r]
                if r == 0:
                    losses.append(float(loss))
            step = ranks[0][2].step_count
            assert ranks[1][2].step_count == step
            ng = ranks[0][2].natural_gradient
            if ng and blown_at is None and step >= ranks[0][2].guard.snapshot_step + BLOWUP_AFTER:
                with torch.no_grad():  # the diverged natural-gradient step, on every replica
                    for model, _, _ in ranks:
                        g = torch.Generator().manual_seed(7)
                        for p in model.parameters():
                            p.add_(torch.randn(p.shape, generator=g) * blowup)
                blown_at = step
            if blown_at is not None and ranks[0][2].guard.restores and \
                    step >= ranks[0][2].guard.restored_at[0] + 100:
                break
            time.sleep(max(0.0, 1 / 250 - (time.monotonic() - t0)))
        assert blown_at is not None, f"no natural-gradient switch by step {step}"
        mons = [m for _, _, m in ranks]
        trans = [(t.step, t.cause, t.reason) for t in client.get_run("rollback").transitions]
        assert all(m.guard.restores == 1 for m in mons), (step, blown_at, trans,
                                                          [m.applied for m in mons])

        # The server's record: the switch, then its rollback with evidence.
        info = client.get_run("rollback")
        trans = list(info.transitions)
        switch = [t for t in trans if t.to_phase == pb.PHASE_REFINEMENT]
        back = [t for t in trans if t.cause == pb.CAUSE_ROLLBACK]
        assert len(switch) == 1 and len(back) == 1, [(t.to_phase, t.reason) for t in trans]
        sw, rb = switch[0], back[0]
        assert rb.from_phase == pb.PHASE_REFINEMENT and rb.to_phase == pb.PHASE_ACQUISITION
        ev = rb.evidence
        assert ev["switch_step"] == sw.step
        assert ev["loss_limit"] == pytest.approx(2.0 * ev["pre_switch_loss"])
        if math.isinf(blowup):
            assert ev["loss_nonfinite"] == 1 and "non-finite" in rb.reason
            assert scrape(server, "spotter_nonfinite_losses_total") >= 1
        else:
            assert ev["loss_nonfinite"] == 0 and ev["loss"] > ev["loss_limit"]
        assert scrape(server, "spotter_rollbacks_total") == 1
        assert scrape(server, "spotter_run_rollbacks") == 1
        assert 0 <= ev["steps_since_switch"] <= 100
        assert "failed its guard" in rb.reason
        traj = client.get_trajectory("rollback")
        d_sw = [d for d in traj.directives if d.version == sw.directive_version][0]
        d_rb = [d for d in traj.directives if d.version == rb.directive_version][0]
        assert d_sw.guard_steps == 100
        assert d_rb.rollback and d_rb.snapshot_step == sw.step
        assert d_rb.optimizer.kind == pb.OptimizerInstruction.KIND_KEEP

        for r, (model, opt, mon) in enumerate(ranks):
            # Snapshot at the switch's effective step, restore at the
            # rollback's: the same steps on both ranks.
            applied = {a.version: a for a in mon.applied}
            assert applied[d_sw.version].step == d_sw.effective_step
            assert applied[d_rb.version].step == d_rb.effective_step
            assert mon.guard.restored_at == [d_rb.effective_step]
            assert mon.guard.snapshot_step is None  # dropped after the restore
            # First-order at rollback_lr_factor x the LR before the switch.
            assert not mon.natural_gradient and mon.kfac is None
            assert opt.param_groups[0]["lr"] == pytest.approx(d_rb.lr.start_lr)
        assert snapshot[0] is not None and snapshot[1] is not None
        for k in snapshot[0]:
            assert torch.equal(snapshot[0][k], snapshot[1][k])
        # The loss came back: the first-order steps after the restore train
        # from the snapshot, far below the blown-up loss.
        r_at = d_rb.effective_step
        blown = sum(losses[blown_at:blown_at + 5]) / 5
        after = sum(losses[r_at + 1:r_at + 21]) / 20
        assert not math.isfinite(blown) or after < 0.5 * blown, (blown, after)
        assert after < 1.5 * ev["pre_switch_loss"], (after, ev["pre_switch_loss"])
        # And the snapshot is what both ranks started from at the restore: the
        # replicas are still identical.
        sd = [m.state_dict() for m, _, _ in ranks]
        for k in sd[0]:
            assert torch.equal(sd[0][k], sd[1][k])
        assert not list(tmp_path.glob("spotter-snapshot-*.pt"))  # the disk copy is gone
    finally:
        for _, _, m in ranks:
            m.close()
        client.close()
        server.stop()
