"""spotter.torch.DirectiveLR: the run's directives as a torch LR scheduler.

For training loops that own the optimizer step (``scheduler.step()`` after
``optimizer.step()``, gradient accumulation, AMP, framework trainers), with a
Monitor in hooks mode (``Monitor(..., apply="hooks")``):

    monitor = Monitor(model, opt, run="vit", total_steps=10_000, apply="hooks")
    sched = DirectiveLR(opt, monitor, fallback=CosineAnnealingLR(opt, 10_000))
    for x, y in loader:
        loss_fn(model(x), y).backward()
        opt.step(); sched.step(); opt.zero_grad()
        monitor.on_step_end(loss)
        if monitor.should_stop:
            break

After the n-th ``step()`` (``last_epoch`` == n == the index of the next
optimizer step, 0 right after construction) every param group's LR is

  * the directive in force at step n's ``lr.at(n)`` (group i keeps its
    initial ratio to group 0, as under Monitor.step()), when the session
    holds a non-advisory directive with effective_step <= n;
  * otherwise the fallback: the wrapped scheduler's LRs (it is stepped along,
    on its own LRs, so a chainable scheduler never sees the directive's), or
    the groups' initial LRs without one.

ADVISE-mode runs send advisory directives only, so the fallback always
applies there (read them from ``monitor.advice``). Without a server, or while
it is unreachable, the directives already received stay in force (fail-open).

``state_dict()`` holds last_epoch, the base LRs and the fallback's state
(nested), never the monitor or session; ``load_state_dict()`` restores them,
and the next ``step()`` applies the directive in force at the restored step.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch.optim import lr_scheduler as _sched

#: LRScheduler (torch >= 2.0) or _LRScheduler (older).
_Base = getattr(_sched, "LRScheduler", None) or _sched._LRScheduler


class DirectiveLR(_Base):
    """Args:
      optimizer: the optimizer whose param groups get the LR.
      source: a spotter.torch.Monitor, a spotter.RunSession, or anything
        with ``directive_at(step)`` (None: no directives, fallback only).
      fallback: a torch LR scheduler of the same optimizer, stepped along and
        used while no directive is in force [None: the initial LRs].
      last_epoch, verbose: as for torch's schedulers.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, source=None, fallback=None,
                 last_epoch: int = -1, verbose: bool = False):
        if fallback is not None and getattr(fallback, "optimizer", optimizer) is not optimizer:
            raise ValueError("fallback must schedule the same optimizer")
        self.source = source
        self.fallback = fallback
        self._stepping = False
        if verbose:
            super().__init__(optimizer, last_epoch, verbose)
        else:  # newer torch deprecates passing verbose at all
            super().__init__(optimizer, last_epoch)
        self._stepping = True

    # -------------------------------------------------------------- schedule
    def directive(self, step: Optional[int] = None):
        """The (non-advisory) directive in force at ``step`` [last_epoch], or None."""
        src = self.source
        if src is None:
            return None
        if not hasattr(src, "directive_at"):
            src = getattr(src, "session", None)  # a Monitor
            if src is None:
                return None
        return src.directive_at(self.last_epoch if step is None else int(step))

    def _ratios(self) -> List[float]:
        b0 = self.base_lrs[0]
        return [b / b0 if b0 else 1.0 for b in self.base_lrs]

    def _fallback_lrs(self) -> List[float]:
        if self.fallback is not None:
            return list(self.fallback.get_last_lr())
        return list(self.base_lrs)

    def get_lr(self) -> List[float]:
        d = self.directive()
        if d is None:
            return self._fallback_lrs()
        lr = d.lr.at(max(0, self.last_epoch))
        return [lr * r for r in self._ratios()]

    def step(self, epoch=None):
        # The fallback steps on its own LRs (chainable schedulers read
        # group["lr"]), then this scheduler writes the LRs in force.
        if self._stepping and self.fallback is not None:
            for g, lr in zip(self.optimizer.param_groups, self.fallback.get_last_lr()):
                g["lr"] = lr
            self.fallback.step()
        super().step(epoch)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        skip = ("optimizer", "source", "fallback", "_stepping")
        out = {k: v for k, v in self.__dict__.items() if k not in skip}
        out["fallback_state"] = self.fallback.state_dict() if self.fallback is not None else None
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        fb = state.pop("fallback_state", None)
        for k in ("optimizer", "source", "fallback", "_stepping"):
            state.pop(k, None)
        self.__dict__.update(state)
        if fb is not None and self.fallback is not None:
            self.fallback.load_state_dict(fb)
