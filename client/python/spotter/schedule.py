"""Directives and learning-rate schedules as plain Python values.

These mirror spotter.v1.Directive / LrSchedule (proto/spotter/v1/spotter.proto)
and evaluate them exactly as the server's core does (core/phase/directive.cc),
so every rank computes the same lr_at(step) without talking to anyone.
Immutable and therefore thread-safe.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, List, Optional, Tuple

from spotter._proto import pb

#: Phase names by proto enum value.
PHASES = {
    pb.PHASE_UNSPECIFIED: "unspecified",
    pb.PHASE_ACQUISITION: "acquisition",
    pb.PHASE_REFINEMENT: "refinement",
    pb.PHASE_POLISH: "polish",
    pb.PHASE_DONE: "done",
}
CAUSES = {
    pb.CAUSE_UNSPECIFIED: "unspecified",
    pb.CAUSE_AUTOMATIC: "automatic",
    pb.CAUSE_OVERRIDE: "override",
    pb.CAUSE_RELEASE: "release",
    pb.CAUSE_FINISH: "finish",
    pb.CAUSE_ROLLBACK: "rollback",
}


@dataclasses.dataclass(frozen=True)
class LrSchedule:
    """A learning-rate schedule; ``at(step)`` follows the proto's contract.

    kind is "constant", "linear" or "cosine". For step <= start_step the LR is
    start_lr, for step >= end_step it is end_lr, in between linear or cosine
    interpolation with f = (step - start_step) / (end_step - start_step).
    "constant" ignores the steps and end_lr.
    """
    kind: str = "constant"
    start_step: int = 0
    end_step: int = 0
    start_lr: float = 0.0
    end_lr: float = 0.0

    def at(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` (>= 0)."""
        if self.kind == "constant":
            return self.start_lr
        if step <= self.start_step:
            return self.start_lr
        if step >= self.end_step:
            return self.end_lr
        f = (step - self.start_step) / (self.end_step - self.start_step)
        if self.kind == "linear":
            return self.start_lr + (self.end_lr - self.start_lr) * f
        return self.end_lr + (self.start_lr - self.end_lr) * 0.5 * (1.0 + math.cos(math.pi * f))

    @staticmethod
    def from_proto(m) -> "LrSchedule":
        kind = {m.KIND_LINEAR: "linear", m.KIND_COSINE: "cosine"}.get(m.kind, "constant")
        return LrSchedule(kind, int(m.start_step), int(m.end_step), float(m.start_lr),
                          float(m.end_lr))


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """What the optimizer should do: "keep" (first order) or "natural_gradient"
    (K-FAC with Tikhonov ``damping``, factors refreshed every
    ``factor_update_interval`` steps and inverted every
    ``inverse_update_interval`` steps; 0 = the preconditioner's default)."""
    kind: str = "keep"
    damping: float = 0.0
    factor_update_interval: int = 0
    inverse_update_interval: int = 0


@dataclasses.dataclass(frozen=True)
class Directive:
    """One versioned directive of a run (see spotter.v1.Directive).

    ``generation`` counts how often this session found its run re-created by
    the server (a restart without persistence restarts versions at 1); order
    directives by ``(generation, version)``.
    """
    version: int
    effective_step: int
    phase: str
    lr: LrSchedule
    optimizer: Optimizer
    stop: bool = False
    reason: str = ""
    advisory: bool = False
    cause: str = "automatic"
    noise_std: float = 0.0
    generation: int = 0
    # The guarded switch (docs/PHASES.md): a natural-gradient directive with
    # guard_steps > 0 asks for a snapshot at the switch; a rollback restores
    # the snapshot of the switch that took effect at snapshot_step.
    guard_steps: int = 0
    rollback: bool = False
    snapshot_step: int = 0

    @property
    def key(self):
        return (self.generation, self.version)

    @staticmethod
    def from_proto(d, generation: int = 0) -> "Directive":
        o = d.optimizer
        opt = Optimizer(
            "natural_gradient" if o.kind == o.KIND_NATURAL_GRADIENT else "keep",
            float(o.damping), int(o.factor_update_interval), int(o.inverse_update_interval))
        return Directive(
            version=int(d.version), effective_step=int(d.effective_step),
            phase=PHASES.get(d.phase, "unspecified"), lr=LrSchedule.from_proto(d.lr),
            optimizer=opt, stop=bool(d.stop), reason=d.reason, advisory=bool(d.advisory),
            cause=CAUSES.get(d.cause, "unspecified"), noise_std=float(d.noise_std),
            generation=generation, guard_steps=int(d.guard_steps), rollback=bool(d.rollback),
            snapshot_step=int(d.snapshot_step))

    def to_proto(self) -> "pb.Directive":
        """The spotter.v1.Directive this was made from (without issued_at)."""
        kinds = {"linear": pb.LrSchedule.KIND_LINEAR, "cosine": pb.LrSchedule.KIND_COSINE}
        d = pb.Directive(version=self.version, effective_step=self.effective_step,
                         phase=_PHASE_VALUES[self.phase], stop=self.stop, reason=self.reason,
                         advisory=self.advisory, cause=_CAUSE_VALUES[self.cause],
                         noise_std=self.noise_std, guard_steps=self.guard_steps,
                         rollback=self.rollback, snapshot_step=self.snapshot_step)
        d.lr.kind = kinds.get(self.lr.kind, pb.LrSchedule.KIND_CONSTANT)
        d.lr.start_step, d.lr.end_step = self.lr.start_step, self.lr.end_step
        d.lr.start_lr, d.lr.end_lr = self.lr.start_lr, self.lr.end_lr
        o = self.optimizer
        d.optimizer.kind = (pb.OptimizerInstruction.KIND_NATURAL_GRADIENT
                            if o.kind == "natural_gradient" else pb.OptimizerInstruction.KIND_KEEP)
        d.optimizer.damping = o.damping
        d.optimizer.factor_update_interval = o.factor_update_interval
        d.optimizer.inverse_update_interval = o.inverse_update_interval
        return d


_PHASE_VALUES = {v: k for k, v in PHASES.items()}
_CAUSE_VALUES = {v: k for k, v in CAUSES.items()}


def encode_checkpoint(run: str, rank: int, step: int, directives: Iterable[Directive]) -> bytes:
    """A serialized spotter.v1.SessionCheckpoint (see RunSession.checkpoint)."""
    c = pb.SessionCheckpoint(run=run, rank=rank, step=step)
    for d in sorted(directives, key=lambda d: d.key):
        c.directives.append(d.to_proto())
    return c.SerializeToString()


def decode_checkpoint(data: bytes, run: str, rank: int) -> Tuple[int, List[Directive]]:
    """(step, directives in version order) of a SessionCheckpoint for this run
    and rank; ValueError when it is another run's or rank's, or out of order."""
    c = pb.SessionCheckpoint.FromString(bytes(data))
    if c.run != run or c.rank != rank:
        raise ValueError(f"the checkpoint to resume is of run {c.run!r} rank {c.rank}; this "
                         f"session is run {run!r} rank {rank}")
    out = [Directive.from_proto(d) for d in c.directives]
    if any(a.version >= b.version for a, b in zip(out, out[1:])):
        raise ValueError("the checkpoint's directives are not in version order")
    return int(c.step), out


def directive_in_force(directives: Iterable[Directive], step: int,
                       skip_advisory: bool = True) -> Optional[Directive]:
    """The directive in force at ``step``: among those with effective_step <=
    step (advisory ones skipped unless asked), the one with the highest
    (generation, version). None when there is none. O(len(directives))."""
    best = None
    for d in directives:
        if skip_advisory and d.advisory:
            continue
        if d.effective_step <= step and (best is None or d.key > best.key):
            best = d
    return best
