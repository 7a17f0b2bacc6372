"""A K-FAC preconditioner for Linear and Conv2d layers, fed by spotter's taps.

For a layer with input factor A = E[a a^T] (bias folded in) and output-gradient
factor G = E[d d^T], both running averages (decay ``factor_decay``) refreshed
every ``factor_update_interval`` steps, K-FAC approximates the layer's Fisher
block by G (x) A. With eigendecompositions A = Q_A diag(l_A) Q_A^T and G =
Q_G diag(l_G) Q_G^T, refreshed every ``inverse_update_interval`` steps, the
gradient matrix V (d_out x d_in) becomes

    Q_G [ (Q_G^T V Q_A) / (l_G l_A^T + damping) ] Q_A^T

(Tikhonov damping on the Kronecker product, as in kfac-pytorch's eigen
method). The preconditioned gradients are then scaled by
nu = min(1, sqrt(kl_clip / (lr^2 sum <V, precond V>))) so that the step's
predicted KL change stays bounded (Ba, Grosse, Martens 2017). The trainer's own
optimizer then steps with them. Parameters outside tapped layers keep their
plain gradients.

With torch.distributed initialised (world > 1) the factors are all-reduced
(averaged) at every refresh, so every rank preconditions identically: all
ranks must call update_factors at the same steps (the Monitor guarantees it by
switching at a directive's effective_step).

Not thread-safe: used from the training thread.
"""
from __future__ import annotations

from typing import List

import torch


class KFAC:
    """Args:
      layers: spotter.torch.taps.Layer objects (their A/G of the step).
      damping: Tikhonov damping (> 0).
      factor_update_interval, inverse_update_interval: steps (>= 1).
      factor_decay: running-average weight of the old factors, in [0, 1).
      kl_clip: bound of the step's predicted KL change (> 0), or None for none.
    """

    def __init__(self, layers: List, damping: float = 1e-3, factor_update_interval: int = 10,
                 inverse_update_interval: int = 100, factor_decay: float = 0.95,
                 kl_clip=1e-3):
        if not damping > 0:
            raise ValueError("damping must be > 0")
        self.layers = layers
        self.damping = float(damping)
        self.factor_update_interval = max(1, int(factor_update_interval))
        self.inverse_update_interval = max(1, int(inverse_update_interval))
        self.factor_decay = float(factor_decay)
        self.kl_clip = kl_clip
        self.A, self.G, self.eig = {}, {}, {}
        self.factor_updates = 0
        self.inverse_updates = 0
        self.last_nu = 1.0
        self.failures = 0  # factors skipped as non-finite, or failed inversions

    def configure(self, damping: float, factor_update_interval: int,
                  inverse_update_interval: int) -> None:
        """Applies a directive's settings (0 keeps the current value)."""
        if damping > 0:
            self.damping = float(damping)
        if factor_update_interval > 0:
            self.factor_update_interval = int(factor_update_interval)
        if inverse_update_interval > 0:
            self.inverse_update_interval = int(inverse_update_interval)

    def update_factors(self) -> bool:
        """Folds the factors the taps captured this step into the running
        averages (all-reduced across ranks). False if nothing was captured."""
        got = False
        dist = torch.distributed
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        for layer in self.layers:
            if layer.A is None or layer.G is None:
                continue
            got = True
            a, g = layer.A / max(1, layer.factor_n), layer.G / max(1, layer.factor_n)
            if not (torch.isfinite(a).all() and torch.isfinite(g).all()):
                self.failures += 1  # a diverging step: keep the old factors
                continue
            if world > 1:
                both = torch.cat([a.reshape(-1), g.reshape(-1)])
                dist.all_reduce(both)
                both /= world
                a = both[:a.numel()].reshape(a.shape)
                g = both[a.numel():].reshape(g.shape)
            key = layer.index
            if key not in self.A:
                self.A[key], self.G[key] = a.clone(), g.clone()
            else:
                self.A[key].mul_(self.factor_decay).add_(a, alpha=1 - self.factor_decay)
                self.G[key].mul_(self.factor_decay).add_(g, alpha=1 - self.factor_decay)
        if got:
            self.factor_updates += 1
        return got

    def update_inverses(self) -> None:
        """Eigendecomposes every factor (float64 for stability)."""
        for key in self.A:
            try:
                la, qa = torch.linalg.eigh(self.A[key].double())
                lg, qg = torch.linalg.eigh(self.G[key].double())
            except RuntimeError:  # torch.linalg.LinAlgError: keep the last inverse
                self.failures += 1
                continue
            self.eig[key] = (la.clamp_min(0).float(), qa.float(), lg.clamp_min(0).float(), qg.float())
        self.inverse_updates += 1

    @property
    def ready(self) -> bool:
        return bool(self.eig)

    def precondition(self, lr: float) -> None:
        """Replaces the tapped layers' gradients by their preconditioned, KL-
        clipped versions. No-op until the first update_inverses(). ``lr`` is
        the step size the KL bound assumes: with heavy-ball momentum mu pass
        lr / (1 - mu), the steady-state step (the Monitor does)."""
        if not self.eig:
            return
        updates, vg = [], 0.0
        for layer in self.layers:
            e = self.eig.get(layer.index)
            w = layer.module.weight
            if e is None or w.grad is None:
                continue
            la, qa, lg, qg = e
            b = layer.module.bias
            v = w.grad.reshape(w.shape[0], -1)
            if b is not None:
                bg = b.grad if b.grad is not None else torch.zeros_like(b)
                v = torch.cat([v, bg.reshape(-1, 1)], dim=1)
            v = v.float()
            p = qg.t() @ v @ qa
            p = p / (lg[:, None] * la[None, :] + self.damping)
            p = qg @ p @ qa.t()
            vg += float((p * v).sum()) * lr * lr
            updates.append((layer, p))
        nu = 1.0
        if self.kl_clip and vg > 0:
            nu = min(1.0, (self.kl_clip / vg) ** 0.5)
        self.last_nu = nu
        for layer, p in updates:
            w, b = layer.module.weight, layer.module.bias
            p = p * nu
            if b is not None:
                w.grad.copy_(p[:, :-1].reshape(w.shape))
                if b.grad is not None:
                    b.grad.copy_(p[:, -1].reshape(b.shape))
            else:
                w.grad.copy_(p.reshape(w.shape))
