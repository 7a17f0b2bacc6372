"""The trainer's side of the guarded switch to natural gradient (docs/PHASES.md,
"Guarded switch and rollback"), for torch; core/phase/switch_guard.h is the
same logic for C++ trainers.

At the step a natural-gradient directive with ``guard_steps > 0`` comes into
force, the Monitor snapshots the model's and the optimizer's state_dict
(``torch.save`` into memory by default, or into ``snapshot_dir`` on disk);
when a rollback directive comes into force it loads the snapshot back, the
step's update is skipped (its gradients were taken at the diverged weights)
and training goes on under the rollback's plan (first-order, lower LR). Any
other later directive (POLISH, DONE, ...) drops the snapshot. Every rank
holds the same directives at the same steps, so all ranks snapshot and
restore at the same step.
"""
from __future__ import annotations

import io
import logging
import os
from typing import Optional

import torch

from spotter.schedule import Directive

log = logging.getLogger("spotter")


class SnapshotGuard:
    """Snapshots and restores ``model`` and ``optimizer``. ``directory``: keep
    the snapshot in a file there (``spotter-snapshot-<run>-r<rank>.pt``)
    instead of in host memory. Not thread-safe: the training loop calls it."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 directory: Optional[str] = None, run: str = "run", rank: int = 0):
        self.model, self.optimizer = model, optimizer
        self.path = (os.path.join(directory, f"spotter-snapshot-{run}-r{rank}.pt")
                     if directory else None)
        self._buf: Optional[bytes] = None
        self.snapshot_step: Optional[int] = None
        self.snapshots = self.restores = self.missed_restores = 0
        self.restored_at: list = []  # steps at which a snapshot was put back

    def on_directive(self, t: int, d: Directive) -> bool:
        """Acts on directive ``d`` coming into force at step ``t`` (once per
        directive). True when it restored the snapshot: skip this step's
        update."""
        if d.rollback:
            if self.snapshot_step is None:
                self.missed_restores += 1
                log.warning("spotter: step %d: rollback v%d but no snapshot held (started "
                            "after the switch?): only its plan applies", t, d.version)
                return False
            self._restore(t, d)
            return True
        if d.optimizer.kind == "natural_gradient" and d.guard_steps > 0:
            self._take(t)
        elif self.snapshot_step is not None:
            self._drop()
        return False

    def _take(self, t: int) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": t}
        if self.path:
            torch.save(state, self.path)
        else:
            out = io.BytesIO()
            torch.save(state, out)
            self._buf = out.getvalue()
        self.snapshot_step = t
        self.snapshots += 1

    def _restore(self, t: int, d: Directive) -> None:
        src = self.path if self.path else io.BytesIO(self._buf)
        state = torch.load(src, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.zero_grad(set_to_none=True)
        log.warning("spotter: step %d: rollback v%d: restored the snapshot of step %d (%s)",
                    t, d.version, state["step"], d.reason)
        self.restores += 1
        self.restored_at.append(t)
        self._drop()

    def _drop(self) -> None:
        self._buf, self.snapshot_step = None, None
        if self.path and os.path.exists(self.path):
            os.remove(self.path)
