"""Monitor.state_dict() / load_state_dict(): a training job killed and
resumed from its own checkpoint applies, from the step it resumes at, what
the uninterrupted job applied (docs/PYTHON.md, "Restarts"; docs/RESTARTS.md).

Restored: the step, the adopted directives with their adoption steps (LR,
optimizer, noise, stop), the switches applied (``applied``), the LR ratios of
the param groups, the late-directive count, K-FAC's factors and
eigendecompositions, and the session's checkpoint (its directives; the
session reopens with them). Not restored: the session's queue and counters,
a CUDA sketch staged but not uploaded, the other Monitor counters.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Optional

from spotter.session import RunSession
from spotter.torch.kfac import KFAC
from spotter.torch.sync import STATE_VERSION, Applied, kfac_state, load_kfac_state, session_resume


class Resumable:
    """Mixin of spotter.torch.Monitor (its state lives there)."""

    def state_dict(self) -> dict:
        """What a resumed job needs, for the trainer's own checkpoint (plain
        values, bytes and tensors): the step, the adopted directives with
        their adoption steps, the switches applied, the LR ratios, the K-FAC
        state and (ranks with a session) the session's checkpoint. Take it
        after step() / on_step_end() returned; any rank's will do."""
        return dict(version=STATE_VERSION, run=self.run, step=self._t, synced=self._synced,
                    directives=self._log.state(), applied_key=self._applied_key,
                    applied=[dataclasses.asdict(a) for a in self.applied],
                    natural_gradient=self._ng, ng_since=self._ng_since, lr=self.lr,
                    ratios=list(self._ratios), peak_lr=self.peak_lr, late_directives=self._stats["late_directives"],
                    session=self.session.checkpoint(self._t) if self.session else None,
                    kfac=kfac_state(self.kfac))

    def load_state_dict(self, state: Mapping) -> None:
        """Resumes from a state_dict(): before the first step, on every rank.
        The Monitor continues at its step under the directives the job had
        adopted; this rank's session is reopened (same incarnation, nothing
        was uploaded yet) holding the saved directives, and the server sends
        the newer ones, adopted as usual."""
        if self._stepped:
            raise RuntimeError("load_state_dict() must be called before the first step")
        self._restore(state)
        if self.session is not None and state.get("session"):
            old = self.session
            old.close(timeout=1.0, flush=False)
            self._open_session(session_resume(state["session"], self.run, self.rank),
                               old.incarnation)
        self._plan_capture(self._t)

    def _open_session(self, resume: Optional[bytes], incarnation: Optional[int] = None) -> None:
        self.session = RunSession(self.server, self.run, self.config, rank=self.rank,
                                  incarnation=incarnation, resume=resume, **self._session_opts)
        wait = self._wait_for_server
        if wait > 0 and resume is None:
            self.session.wait_for_directive(wait)
        elif wait > 0:  # held directives: wait for the stream, which brings the newer ones
            deadline = time.monotonic() + wait
            s = self.session
            while not (s.connected or s.error or s.ended) and time.monotonic() < deadline:
                time.sleep(0.005)

    def _restore(self, state: Mapping) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"not a Monitor state_dict of version {STATE_VERSION}")
        if self.run is not None and state.get("run") not in (None, self.run):
            raise ValueError(f"the state is of run {state['run']!r}, this Monitor's is {self.run!r}")
        if state.get("peak_lr", self.peak_lr) != self.peak_lr:
            raise ValueError(f"the state's peak_lr is {state['peak_lr']}, this Monitor's "
                             f"{self.peak_lr}: build the Monitor as in the first run (before "
                             "loading the optimizer's state, or with peak_lr=)")
        top = self._log.load(state["directives"])
        self._t, self._synced = int(state["step"]), int(state["synced"])
        key = state.get("applied_key")
        self._applied_key = (key[0] - top, key[1]) if key else None
        self.applied = [Applied(**dict(a, generation=a["generation"] - top))
                        for a in state["applied"]]
        self._ng, self._ng_since = bool(state["natural_gradient"]), int(state["ng_since"])
        self.lr, self._ratios = state["lr"], list(state["ratios"])
        self._stats["late_directives"] = int(state.get("late_directives", 0))
        if state.get("kfac") is not None:
            self.kfac = KFAC(self.taps.layers, **self._kfac_opts)
            load_kfac_state(self.kfac, state["kfac"])
        if self.session is not None:
            self.session.note_step(self._t)
