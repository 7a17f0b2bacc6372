"""The directive mailbox of spotter.RunSession: what the training thread reads.

A mixin: the session owns the state under its condition variable ``_cv``
(``_directives``, ``_advice``, ``_error``, ``_ended``, ``_latest_diagnostics``,
``run``, ``rank``) and fills it from its background thread.
"""
from __future__ import annotations

from typing import List, Optional

from spotter.schedule import Directive, directive_in_force, encode_checkpoint


class DirectiveMailbox:
    """Read side of the session's directives (thread-safe, never blocks on
    the network)."""

    def directive_at(self, step: int) -> Optional[Directive]:
        """The (non-advisory) directive in force at ``step``, or None if none
        has been received. Cheap: meant to be called at every step boundary."""
        with self._cv:
            return directive_in_force(self._directives, step)

    def lr_at(self, step: int, fallback: Optional[float] = None) -> Optional[float]:
        """The learning rate the directive in force at ``step`` prescribes, or
        ``fallback`` (None) when no directive is known (keep the trainer's own
        LR)."""
        d = self.directive_at(step)
        return fallback if d is None else d.lr.at(step)

    def should_stop(self, step: int) -> bool:
        """True when the directive in force at ``step`` says stop."""
        d = self.directive_at(step)
        return d is not None and d.stop

    def advice(self) -> Optional[Directive]:
        """The newest advisory (ADVISE-mode) directive: shown, never applied."""
        with self._cv:
            return max(self._advice, key=lambda d: d.key) if self._advice else None

    def latest_directive(self) -> Optional[Directive]:
        """The latest directive received, advisory or not."""
        with self._cv:
            return self._latest_locked()

    def directives(self) -> List[Directive]:
        """Every directive received, advisory ones included, oldest first."""
        with self._cv:
            return sorted(self._directives + self._advice, key=lambda d: d.key)

    def checkpoint(self, step: int) -> bytes:
        """What to keep in the trainer's checkpoint taken before running
        ``step``: a serialized SessionCheckpoint (the directives held), for
        ``RunSession(..., resume=...)`` in the resumed process."""
        with self._cv:
            gen = max((d.generation for d in self._directives + self._advice), default=0)
            held = [d for d in self._directives + self._advice if d.generation == gen]
        return encode_checkpoint(self.run, self.rank, int(step), held)

    def latest_diagnostics(self):
        """The latest TrajectoryPoint (diagnostics) the server pushed, or None."""
        with self._cv:
            return self._latest_diagnostics

    def wait_for_directive(self, timeout: float, version: int = 1) -> bool:
        """Blocks up to ``timeout`` seconds until a directive of version >=
        ``version`` is known (the latest received, advisory or not). False on
        timeout or when the session stopped (error, run ended). For start-up
        only (never inside a training step)."""
        def arrived():
            d = self._latest_locked()
            return d is not None and d.version >= version

        with self._cv:
            self._cv.wait_for(lambda: arrived() or self._error is not None or self._ended,
                              timeout)
            return arrived()

    def _latest_locked(self) -> Optional[Directive]:
        known = self._directives + self._advice
        return max(known, key=lambda d: d.key) if known else None
