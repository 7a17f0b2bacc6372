"""spotter.torch: the taps against per-example / per-microbatch gradients
computed the slow way, and the Monitor's directive application step by step
(against the fake server, which delivers directives exactly when told)."""
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fake_server
from spotter._proto import pb
from spotter.projection import CountSketch, count_sketch_cell, splitmix64_at
from spotter.torch import Monitor, Taps, split_dim


def kron_map(taps):
    """The explicit per-example sketch map, coordinate list per layer:
    (bucket, sign) for (o, i) with i over weight columns then the bias."""
    cells = []
    for layer in taps.layers:
        s_in = splitmix64_at(taps.seed, 2 * layer.index)
        s_out = splitmix64_at(taps.seed, 2 * layer.index + 1)
        cin = [count_sketch_cell(s_in, i, taps.k_in) for i in range(layer.d_in)]
        cout = [count_sketch_cell(s_out, o, taps.k_out) for o in range(layer.d_out)]
        cells.append((cin, cout))
    return cells


def explicit_sketch(taps, cells, grads_by_layer):
    """grads_by_layer: list of (d_out, d_in) per-example gradient matrices."""
    y = np.zeros(taps.k)
    for (cin, cout), gm in zip(cells, grads_by_layer):
        for o in range(gm.shape[0]):
            for i in range(gm.shape[1]):
                b = cout[o][0] * taps.k_in + cin[i][0]
                y[b] += cout[o][1] * cin[i][1] * gm[o, i]
    return y


def layer_grad_matrix(layer):
    w = layer.module.weight.grad.reshape(layer.d_out, -1)
    if layer.module.bias is not None:
        w = torch.cat([w, layer.module.bias.grad.reshape(-1, 1)], dim=1)
    return w.double().numpy()


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
        self.seq = nn.Linear(3, 4)  # applied per position: a sequence layer
        self.head = nn.Linear(4 * 9, 5, bias=False)

    def forward(self, x):
        h = torch.relu(self.conv(x))                 # (B, 3, 3, 3)
        h = self.seq(h.flatten(2).transpose(1, 2))   # (B, 9, 4)
        return self.head(torch.tanh(h).flatten(1))


@pytest.mark.parametrize("make", [lambda: nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)),
                                  ConvNet], ids=["mlp", "conv+sequence"])
def test_per_example_sketch_equals_sketch_of_per_example_gradients(make):
    torch.manual_seed(0)
    model = make()
    x = torch.randn(6, 5) if isinstance(model, nn.Sequential) else torch.randn(6, 2, 6, 6)
    y = torch.randint(0, 3, (6,))
    taps = Taps(model, seed=123, k=12, sample="per_example")
    assert (taps.k_out, taps.k_in) == (4, 3)
    assert taps.input_dim == sum(p.numel() for p in model.parameters())
    taps.begin_step(sketch=True, factors=False)
    F.cross_entropy(model(x), y).backward()
    rows, spr = taps.collect_rows(100)
    assert rows.shape == (6, 12) and spr == 1
    taps.remove()
    cells = kron_map(taps)
    for i in range(6):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        want = explicit_sketch(taps, cells, [layer_grad_matrix(l) for l in taps.layers])
        np.testing.assert_allclose(rows[i].double().numpy(), want, rtol=1e-4, atol=1e-5)


def test_per_microbatch_rows_are_the_flat_sketch_of_each_backward():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))
    taps = Taps(model, seed=7, k=16, sample="per_microbatch")
    params = list(model.parameters())
    cs = CountSketch(7, taps.input_dim, 16)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    taps.begin_step(sketch=True, factors=False)
    for xb, yb in zip(x.split(4), y.split(4)):
        F.cross_entropy(model(xb), yb).backward()
    rows, spr = taps.collect_rows(100)
    assert rows.shape == (2, 16) and spr == 4
    for i, (xb, yb) in enumerate(zip(x.split(4), y.split(4))):
        g = torch.autograd.grad(F.cross_entropy(model(xb), yb), params)
        flat = torch.cat([t.reshape(-1) for t in g])
        torch.testing.assert_close(rows[i], cs(flat), rtol=1e-6, atol=1e-7)
    # No capture planned: nothing is recorded, and no-grad forwards never are.
    taps.begin_step(sketch=False, factors=False)
    F.cross_entropy(model(x), y).backward()
    assert taps.collect_rows(100) == (None, 0)


def test_split_dim():
    assert split_dim(256) == (16, 16) and split_dim(128) == (16, 8)
    assert split_dim(12) == (4, 3) and split_dim(7) == (7, 1)


def directive(version, eff, lr, ng=False, stop=False, advisory=False):
    d = pb.Directive(version=version, effective_step=eff, phase=pb.PHASE_REFINEMENT if ng else
                     pb.PHASE_ACQUISITION, stop=stop, advisory=advisory)
    d.lr.kind = pb.LrSchedule.KIND_CONSTANT
    d.lr.start_lr = lr
    if ng:
        d.optimizer.kind = pb.OptimizerInstruction.KIND_NATURAL_GRADIENT
        d.optimizer.damping = 1e-2
        d.optimizer.factor_update_interval = 2
        d.optimizer.inverse_update_interval = 4
    return pb.ConnectResponse(directive=d)


@pytest.fixture
def fake():
    server, f, target = fake_server.start()
    f.target = target
    yield f
    server.stop(0)


def small_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.123)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    return model, opt, x, y


def wait_until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.01)
    return pred()


def test_directives_apply_exactly_at_their_effective_step(fake):
    model, opt, x, y = small_problem()
    mon = Monitor(model, opt, run="m", server=fake.target, total_steps=100, sketch_every=5,
                  sketch_dim=16, wait_for_server=0)
    try:
        assert wait_until(lambda: mon.session.connected)
        fake.push(directive(1, 0, 0.01))
        fake.push(directive(2, 10, 0.02, ng=True))
        fake.push(directive(3, 14, 0.5, advisory=True))
        fake.push(directive(4, 20, 0.03, stop=True))
        assert wait_until(lambda: mon.session.stats().directives == 4)
        lrs, ng = [], []
        while not mon.should_stop:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            before = [p.detach().clone() for p in model.parameters()]
            mon.step(loss)
            moved = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
            lrs.append(opt.param_groups[0]["lr"])
            ng.append(mon.natural_gradient)
            assert moved != mon.should_stop  # the stop step makes no update
            assert mon.step_count < 50
        assert lrs == [0.01] * 10 + [0.02] * 10 + [0.03]
        assert ng == [False] * 10 + [True] * 10 + [False]  # the stop directive says "keep"
        assert [(a.step, a.version, a.late) for a in mon.applied] == \
            [(0, 1, False), (10, 2, False), (20, 4, False)]
        assert mon.advice.version == 3
        st = mon.stats()
        assert st["kfac_factor_updates"] >= 4 and st["kfac_inverse_updates"] >= 2
        assert st["sketches"] == 4  # steps 0, 5, 10, 15 (20 is the stop step)
        assert mon.session.flush(10)
    finally:
        mon.close()
    sketches = [r.sketch for r in fake.streams[0] if r.WhichOneof("msg") == "sketch"]
    assert [s.step for s in sketches] == [0, 5, 10, 15]
    assert [s.lr for s in sketches] == [0.01, 0.01, 0.02, 0.02]
    assert all(s.rows == 32 and s.cols == 16 and s.samples_per_row == 1 for s in sketches)


def test_fail_open_without_server_keeps_the_optimizer_lr():
    model, opt, x, y = small_problem()
    mon = Monitor(model, opt, run="m", server="127.0.0.1:1", total_steps=100, sketch_every=1,
                  sketch_dim=16, wait_for_server=0.1, session_options={"open_timeout": 0.2})
    try:
        for _ in range(5):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
        assert opt.param_groups[0]["lr"] == 0.123 and mon.applied == []
        st = mon.stats()
        assert st["sketches"] == 5 and st["session"]["queued"] == 5
        assert not st["session"]["connected"]
    finally:
        mon.close(timeout=0.5)


def test_param_group_ratios_and_noise_are_rank_deterministic(fake):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                           {"params": model[1].parameters(), "lr": 0.01}])
    mon = Monitor(model, opt, run="m", server=fake.target, total_steps=10, sketch_dim=4,
                  wait_for_server=0)
    try:
        assert wait_until(lambda: mon.session.connected)
        d = directive(1, 0, 1.0)
        d.directive.noise_std = 0.5
        fake.push(d)
        assert wait_until(lambda: mon.session.stats().directives == 1)
        x = torch.randn(8, 4)
        model(x).sum().backward()
        g0 = model[0].weight.grad.clone()
        mon.step(step_fn=lambda: None)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.1])
        noise = model[0].weight.grad - g0
        assert noise.abs().sum() > 0
        # The same (seed, step) gives the same noise: ranks stay identical.
        gen = torch.Generator().manual_seed((0 * 1_000_003 + 0) & 0x7FFFFFFFFFFFFFFF)
        z = torch.randn(g0.shape, generator=gen)
        torch.testing.assert_close(noise / noise.norm(), z / z.norm())
    finally:
        mon.close()
