"""Sketch coverage: which trainable parameters are in the sketch, as
Taps/Monitor count them (sketched_params, trainable_params, sketched_fraction,
the run's labels), against counts worked out here by hand; and the
per-example / per-microbatch sketches of a model with nn.MultiheadAttention
against the gradients computed the slow way.

nn.MultiheadAttention passes its parameters to F.multi_head_attention_forward,
so its out_proj Linear is never called: per example it is neither tapped nor
counted (a warning names it); per microbatch every parameter's gradient is
sketched through the parameter hooks.
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spotter import Client
from spotter.projection import CountSketch
from spotter.torch import Monitor, Taps
from test_monitor import explicit_sketch, kron_map, layer_grad_matrix

# The warnings these models are expected to raise; the tests that check them record them.
pytestmark = [pytest.mark.filterwarnings("ignore:spotter. nn.MultiheadAttention"),
              pytest.mark.filterwarnings("ignore:spotter. the per-example sketch covers")]

E, HEADS, SEQ, CLASSES = 8, 2, 5, 3


class AttnNet(nn.Module):
    """Linear -> MultiheadAttention -> LayerNorm -> Linear(E, hidden) -> Linear(hidden, 3)."""

    def __init__(self, hidden):
        super().__init__()
        self.inp = nn.Linear(4, E)
        self.attn = nn.MultiheadAttention(E, HEADS, batch_first=True)
        self.norm = nn.LayerNorm(E)
        self.mid = nn.Linear(E, hidden)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x):
        h = self.inp(x)
        a, _ = self.attn(h, h, h)
        h = self.norm(h + a)
        return self.head(torch.tanh(self.mid(h)).mean(1))


def counts(hidden):
    """(sketched per example, all trainable), by hand."""
    linears = (4 * E + E) + (E * hidden + hidden) + (hidden * CLASSES + CLASSES)
    attention = (3 * E * E + 3 * E) + (E * E + E)  # in_proj weight/bias, out_proj weight/bias
    layer_norm = 2 * E
    return linears, linears + attention + layer_norm


def batch(n=6):
    return torch.randn(n, SEQ, 4), torch.randint(0, CLASSES, (n,))


def coverage_warnings(record):
    return [str(w.message) for w in record if "sketch covers" in str(w.message)]


def test_per_example_counts_only_the_tapped_layers_and_names_attention():
    torch.manual_seed(0)
    model = AttnNet(hidden=4)
    sketched, total = counts(4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        taps = Taps(model, seed=3, k=16, sample="per_example")
    assert [layer.name for layer in taps.layers] == ["inp", "mid", "head"]  # no attn.out_proj
    assert taps.input_dim == sketched == taps.sketched_params
    assert taps.trainable_params == total == sum(p.numel() for p in model.parameters())
    assert taps.sketched_fraction == sketched / total
    assert any("MultiheadAttention ['attn']" in str(w.message) for w in record)
    # The largest unsketched module first; out_proj folded into its attention.
    assert taps.unsketched == [("attn", (3 * E * E + 3 * E) + (E * E + E)), ("norm", 2 * E)]
    taps.remove()


def test_frozen_parameters_are_not_counted():
    model = AttnNet(hidden=4)
    for p in model.attn.parameters():
        p.requires_grad_(False)
    model.norm.weight.requires_grad_(False)
    taps = Taps(model, seed=3, k=16, sample="per_example")
    sketched, _ = counts(4)
    assert taps.sketched_params == sketched
    assert taps.trainable_params == sketched + E  # the LayerNorm's bias
    taps.remove()


@pytest.mark.parametrize("hidden,warns", [(4, True), (256, False)])
def test_the_coverage_warning_fires_under_90_percent_only(hidden, warns):
    sketched, total = counts(hidden)
    assert (sketched / total < 0.9) == warns  # the two models straddle the threshold
    model = AttnNet(hidden)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mon = Monitor(model, torch.optim.SGD(model.parameters(), lr=0.1), server=None,
                      total_steps=10, sketch_dim=16)
    got = coverage_warnings(record)
    if warns:
        assert len(got) == 1
        assert "attn (MultiheadAttention" in got[0] and "norm (LayerNorm" in got[0]
        assert got[0].index("attn (") < got[0].index("norm (")  # largest first
    else:
        assert got == []
    s = mon.stats()
    assert (s["sketched_params"], s["trainable_params"]) == (sketched, total)
    assert s["sketched_fraction"] == sketched / total
    mon.close()


def test_per_microbatch_sketches_every_parameter_attention_included():
    torch.manual_seed(1)
    model = AttnNet(hidden=4)
    _, total = counts(4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        taps = Taps(model, seed=7, k=16, sample="per_microbatch")
    assert coverage_warnings(record) == []
    assert taps.input_dim == taps.sketched_params == taps.trainable_params == total
    assert taps.sketched_fraction == 1.0 and taps.fraction_label() == "1.000"
    x, y = batch(8)
    taps.begin_step(sketch=True, factors=False)
    for xb, yb in zip(x.split(4), y.split(4)):
        F.cross_entropy(model(xb), yb).backward()
    rows, _ = taps.collect_rows(100)
    params = list(model.parameters())
    cs = CountSketch(7, total, 16)
    for i, (xb, yb) in enumerate(zip(x.split(4), y.split(4))):
        g = torch.autograd.grad(F.cross_entropy(model(xb), yb), params)
        assert g[1].abs().sum() > 0  # attn.in_proj_weight has a gradient, and it is sketched
        torch.testing.assert_close(rows[i], cs(torch.cat([t.reshape(-1) for t in g])),
                                   rtol=1e-5, atol=1e-6)
    taps.remove()


def test_per_example_sketch_with_attention_is_exact_on_the_tapped_layers():
    torch.manual_seed(2)
    model = AttnNet(hidden=4)
    x, y = batch(6)
    taps = Taps(model, seed=11, k=12, sample="per_example")
    taps.begin_step(sketch=True, factors=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        F.cross_entropy(model(x), y).backward()
        rows, _ = taps.collect_rows(100)
    assert not any("forward hooks never ran" in str(w.message) for w in record)
    taps.remove()
    cells = kron_map(taps)
    for i in range(6):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        want = explicit_sketch(taps, cells, [layer_grad_matrix(layer) for layer in taps.layers])
        np.testing.assert_allclose(rows[i].double().numpy(), want, rtol=1e-4, atol=1e-5)


def test_a_layer_used_functionally_is_reported_once_gradients_arrive():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.linear(x, self.a.weight, self.a.bias))

    model = Functional()
    taps = Taps(model, seed=1, k=16, sample="per_example")
    taps.begin_step(sketch=True, factors=False)
    F.cross_entropy(model(torch.randn(4, 4)), torch.randint(0, 2, (4,))).backward()
    with pytest.warns(UserWarning, match=r"\['a'\] received gradients"):
        taps.collect_rows(10)
    taps.remove()


def test_the_run_labels_carry_the_coverage(spotterd):
    torch.manual_seed(3)
    model = AttnNet(hidden=256)
    sketched, total = counts(256)
    mon = Monitor(model, torch.optim.SGD(model.parameters(), lr=0.1), run="coverage",
                  server=spotterd.target, total_steps=100, sketch_dim=16,
                  config={"labels": {"team": "vision"}})
    try:
        with Client(spotterd.target) as c:
            labels = dict(c.get_run("coverage").config.labels)
    finally:
        mon.close(timeout=2)
    assert labels["spotter.sketched_params"] == str(sketched)
    assert sketched / total > 0.9
    assert labels["spotter.sketched_fraction"] == "%.3f" % (math.floor(1000 * sketched / total)
                                                            / 1000)
    assert labels["spotter.sample"] == "per_example" and labels["team"] == "vision"
