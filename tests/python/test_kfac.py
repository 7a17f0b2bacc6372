"""The K-FAC preconditioner solves its damped Kronecker system, and speeds up
an ill-conditioned classification compared with plain SGD at the same LR."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from spotter.torch import KFAC, Taps


def test_preconditioned_gradient_solves_the_damped_kronecker_system():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    taps = Taps(lin, seed=1, k=16, sample="per_example")
    taps.begin_step(sketch=False, factors=True)
    x = torch.randn(64, 6) * torch.tensor([5.0, 1, 1, 0.2, 1, 3])
    (lin(x) ** 2).mean().backward()
    k = KFAC(taps.layers, damping=0.05, kl_clip=None)
    assert k.update_factors()
    k.update_inverses()
    A, G = k.A[0].double(), k.G[0].double()
    # A is E[a a^T] of the inputs with the bias column; G of the output grads
    # times the batch size (per-example scale).
    a = torch.cat([x, torch.ones(64, 1)], 1).double()
    torch.testing.assert_close(A, a.t() @ a / 64, rtol=1e-5, atol=1e-5)
    v = torch.cat([lin.weight.grad, lin.bias.grad[:, None]], 1).double()
    k.precondition(lr=0.1)
    p = torch.cat([lin.weight.grad, lin.bias.grad[:, None]], 1).double()
    # (G (x) A + damping I) vec(P) = vec(V), i.e. G P A + damping P = V.
    torch.testing.assert_close(G @ p @ A + 0.05 * p, v, rtol=1e-3, atol=1e-5)


def test_kfac_beats_sgd_on_ill_conditioned_classification():
    # Softmax regression on inputs whose scales span two decades: plain SGD
    # crawls along the small directions; K-FAC's A^-1 rescales them.
    def train(use_kfac, lr=0.3):
        torch.manual_seed(0)
        scales = torch.logspace(0, -2, 20)
        w_true = torch.randn(5, 20) * 3 / scales
        lin = nn.Linear(20, 5)
        taps = Taps(lin, seed=1, k=16, sample="per_example")
        opt = torch.optim.SGD(lin.parameters(), lr=lr)
        kfac = KFAC(taps.layers, damping=1e-3, kl_clip=None) if use_kfac else None
        for step in range(100):
            taps.begin_step(sketch=False, factors=use_kfac and step % 5 == 0)
            x = torch.randn(128, 20) * scales
            loss = F.cross_entropy(lin(x), (x @ w_true.t()).argmax(1))
            opt.zero_grad()
            loss.backward()
            if kfac:
                kfac.update_factors()
                if step % 10 == 0:
                    kfac.update_inverses()
                kfac.precondition(lr)
            opt.step()
        x = torch.randn(4000, 20) * scales
        return float(F.cross_entropy(lin(x), (x @ w_true.t()).argmax(1)))

    sgd, kfac = train(False), train(True)
    assert kfac < 0.6 * sgd, (sgd, kfac)
