"""Forward/backward taps on Linear and Conv2d layers (and on parameters) that
produce, without materialising any per-example gradient:

  * per-example sketches, LoGra style: for a layer with inputs a_t (bias
    folded in as a constant 1) and output gradients d_t over positions t, the
    per-example weight gradient is sum_t d_t a_t^T. With CountSketches C_in
    (d_in -> k_in) and C_out (d_out -> k_out), its Kronecker-structured sketch
    (C_out (x) C_in) vec(sum_t d_t a_t^T) = vec(sum_t (C_out d_t)(C_in a_t)^T)
    is computed from the projected factors alone; the layers' sketches are
    summed into the run's k = k_out * k_in dimensions;
  * per-microbatch sketches: every backward() between two steps is one
    sample; each parameter's gradient contribution is projected with the
    run's flat CountSketch (coordinates in model.parameters() order) as the
    autograd hook delivers it;
  * K-FAC factors A = E[a a^T] and G = E[d d^T] from the same taps.

Coverage: ``sketched_params`` of the model's ``trainable_params`` are in the
sketch (``sketched_fraction``); every trainable parameter per microbatch, the
tapped layers' per example. nn.MultiheadAttention applies its projections
functionally (its out_proj's hooks never fire): per example it is neither
tapped nor counted, with a warning. Under COVERAGE_WARN a warning names the
largest unsketched modules.

The layer maps are seeded from the run's projection seed (docs/PYTHON.md,
"Per-example sketch map"): layer l (in model.modules() order among the
tapped layers) uses CountSketch(SplitMix64At(seed, 2l)) for inputs and
CountSketch(SplitMix64At(seed, 2l + 1)) for output gradients.

How the factors are projected (``PROJECT``): on the CPU by scatter-adding
the signed coordinates into their buckets (index_add_, in coordinate order,
float32: the same sums, in the same order, as the dense matmul with the
reference BLAS, at a fraction of its cost: O(positions x d) adds instead of
O(positions x d x k_in) multiply-adds, no bias column concatenated); on
other devices by a matmul with the map as a dense (d, k) matrix (a GPU's
index_add_ adds with atomics, a dense matmul is as cheap there). Only sketch
steps (and K-FAC factor steps) capture anything: on other steps the hooks
return at once.

Not thread-safe: driven by the training thread (forward/backward and
Monitor.step).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from spotter.projection import CountSketch, count_sketch_hash, splitmix64_at


def split_dim(k: int):
    """(k_out, k_in) with k_out * k_in = k and k_in the largest divisor of k
    not above sqrt(k) (16 x 16 for 256; 1 x k for a prime k)."""
    k_in = max(d for d in range(1, int(math.isqrt(k)) + 1) if k % d == 0)
    return k // k_in, k_in


def dense_count_sketch(seed: int, d: int, k: int, device=None) -> torch.Tensor:
    """The CountSketch(seed) d -> k as a dense (d, k) float32 matrix, so that
    x @ S projects the last dim of x."""
    bucket, sign = count_sketch_hash(seed, 0, d, k, device)
    s = torch.zeros(d, k, dtype=torch.float32, device=device)
    s[torch.arange(d, device=device), bucket] = sign
    return s


#: How the per-example taps project a layer's factors: "scatter" (index_add_
#: of the signed coordinates into their buckets), "dense" (matmul with the
#: dense map) or "auto" (scatter on the CPU, dense elsewhere). Read at every
#: projection; meant for benchmarks and tests.
PROJECT = "auto"


class _Map:
    """One layer factor's CountSketch (d -> k) on one device, in the form the
    projection needs: bucket/sign vectors (scatter) and/or the dense matrix."""

    def __init__(self, seed: int, d: int, k: int, device):
        self.d, self.k, self.device = d, k, device
        self.bucket, self.sign = count_sketch_hash(seed, 0, d, k, device)
        # The last coordinate's cell as Python numbers (the bias, added
        # without a device sync).
        self.last_bucket, self.last_sign = int(self.bucket[-1]), float(self.sign[-1])
        self._dense = None

    def dense(self) -> torch.Tensor:
        if self._dense is None:
            s = torch.zeros(self.d, self.k, dtype=torch.float32, device=self.device)
            s[torch.arange(self.d, device=self.device), self.bucket] = self.sign
            self._dense = s
        return self._dense

    def project(self, x: torch.Tensor, bias: bool, scale: Optional[float] = None) -> torch.Tensor:
        """The sketch of x's columns: x is (D, B, T) (coordinates first, any
        strides, any float dtype), coordinate D is a constant 1 when ``bias``
        (so D + bias == self.d); every coordinate is multiplied by ``scale``
        (exactly: the map's entries become +-scale). Returns (B, T, k) float32,
        a view."""
        dd, b, t = x.shape
        how = PROJECT if PROJECT != "auto" else ("scatter" if x.device.type == "cpu" else "dense")
        if how == "scatter":
            sign = self.sign if scale is None else self.sign * scale
            src = torch.empty((dd, b, t), dtype=torch.float32, device=x.device)
            torch.mul(x, sign[:dd, None, None], out=src)
            out = torch.zeros(self.k, b * t, dtype=torch.float32, device=x.device)
            out.index_add_(0, self.bucket[:dd], src.view(dd, b * t))  # in coordinate order
            if bias:  # the last coordinate, a constant 1, added last
                out[self.last_bucket] += self.last_sign * (1.0 if scale is None else scale)
            return out.view(self.k, b, t).permute(1, 2, 0)
        if how != "dense":
            raise ValueError(f"PROJECT={PROJECT!r}: expected 'auto', 'scatter' or 'dense'")
        s = self.dense() if scale is None else self.dense() * scale
        # float32 even inside an autocast region (forward hooks run there).
        with torch.autocast(x.device.type, enabled=False):
            p = torch.matmul(x.permute(1, 2, 0).float(), s[:dd])
        if bias:
            p += s[dd]
        return p


class Layer:
    """One tapped layer and what the current step captured from it."""

    def __init__(self, index: int, name: str, module: nn.Module):
        self.index, self.name, self.module = index, name, module
        self.conv = isinstance(module, nn.Conv2d)
        w = module.weight
        self.d_out = w.shape[0]
        self.d_in = w[0].numel() + (1 if module.bias is not None else 0)
        self.params = [w] + ([module.bias] if module.bias is not None else [])
        self.numel = sum(p.numel() for p in self.params)
        self.map_in: Optional[_Map] = None   # the input / output-gradient maps,
        self.map_out: Optional[_Map] = None  # on the device of the last capture
        self.stack: List = []  # (pass id, projected inputs or None, batch) per forward
        self.A = self.G = None  # factor sums of this step
        self.factor_n = 0
        self.fired = False      # the forward hook ran on a captured pass

    def inputs(self, a: torch.Tensor) -> torch.Tensor:
        """The layer input as (B, T, d_in), bias column appended."""
        m = self.module
        if self.conv:
            a = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride).transpose(1, 2)
        else:
            a = a.reshape(a.shape[0], -1, a.shape[-1]) if a.dim() > 1 else a.reshape(1, 1, -1)
        if m.bias is not None:
            a = torch.cat([a, a.new_ones(a.shape[0], a.shape[1], 1)], dim=2)
        return a

    def out_grads(self, g: torch.Tensor) -> torch.Tensor:
        """The output gradient as (B, T, d_out)."""
        if self.conv:
            return g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2)
        return g.reshape(g.shape[0], -1, g.shape[-1]) if g.dim() > 1 else g.reshape(1, 1, -1)

    def input_columns(self, a: torch.Tensor) -> torch.Tensor:
        """The layer input, without the bias column, as (d, B, T) (a view
        where possible): coordinates first, positions in (B, T) order."""
        m = self.module
        if self.conv:  # unfold is (B, C kh kw, L) already
            return F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride).permute(1, 0, 2)
        return self._columns(a)

    def grad_columns(self, g: torch.Tensor) -> torch.Tensor:
        """The output gradient as (d_out, B, T), a view."""
        if self.conv:
            return g.reshape(g.shape[0], g.shape[1], -1).permute(1, 0, 2)
        return self._columns(g)

    @staticmethod
    def _columns(x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 1:
            return x.reshape(x.shape[0], -1, x.shape[-1]).permute(2, 0, 1)
        return x.reshape(-1, 1, 1)


COVERAGE_WARN = 0.9  # Taps warns when the sketch covers less of the trainable parameters


def tappable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros" and \
            not isinstance(module.padding, str)
    return False


class Taps:
    """Installs the hooks on ``model``; see the module docstring.

    Args:
      model: the model (possibly DDP-wrapped).
      seed: the run's projection seed.
      k: the run's sketch dimension.
      sample: "per_example" or "per_microbatch".
      loss_scale: "mean" (the loss averages over the batch: per-example
        gradients are the output gradients times the batch size) or "sum".
    """

    def __init__(self, model: nn.Module, seed: int, k: int, sample: str, loss_scale: str = "mean"):
        self.model, self.seed, self.k, self.sample = model, int(seed), int(k), sample
        self.loss_scale = loss_scale
        self.k_out, self.k_in = split_dim(self.k)
        self.layers: List[Layer] = []
        skipped = []
        # MultiheadAttention passes its parameters (in_proj_*, out_proj.weight/
        # bias) to F.multi_head_attention_forward: its out_proj Linear is never
        # called, so no layer hook of it fires. It is not tapped (nor counted).
        functional = {id(sub): name for name, m in model.named_modules()
                      if isinstance(m, nn.MultiheadAttention) for sub in m.modules()}
        attention = sorted(set(functional.values()))
        self._functional = functional
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and id(m) not in functional:
                if tappable(m) and m.weight.requires_grad:
                    self.layers.append(Layer(len(self.layers), name, m))
                else:
                    skipped.append(name)
        if skipped:
            warnings.warn(f"spotter: layers not tapped (grouped/padded-mode conv or frozen): {skipped}")
        if attention and sample == "per_example":
            warnings.warn(f"spotter: nn.MultiheadAttention {attention} applies its projections "
                          "functionally, so the per-example taps cannot see them: its "
                          "parameters are not in the per-example sketch nor in input_dim, and "
                          "count as unsketched in the coverage (sample='per_microbatch' "
                          "sketches them)")
        self.sketch = False     # capture sketches in the current step
        self.factors = False    # capture K-FAC factors in the current step
        self.pass_id = -1
        self.pass_sizes: List[int] = []
        self.rows: Dict[int, torch.Tensor] = {}
        self.handles = [model.register_forward_pre_hook(self._pre_forward)]
        for layer in self.layers:
            self.handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
        self.flat: Optional[CountSketch] = None
        self.params: List[torch.nn.Parameter] = []
        if sample == "per_microbatch":
            self.params = [p for p in model.parameters() if p.requires_grad]
            self.input_dim = sum(p.numel() for p in self.params)
            offset = 0
            for p in self.params:
                self.handles.append(p.register_hook(self._param_hook(offset)))
                offset += p.numel()
        elif sample == "per_example":
            if not self.layers:
                raise ValueError("sample='per_example' needs Linear or Conv2d layers to tap")
            self.input_dim = sum(layer.numel for layer in self.layers)
        else:
            raise ValueError(f"sample={sample!r}: expected 'per_example' or 'per_microbatch'")
        self._coverage()
        self._checked_fired = sample != "per_example"

    # ------------------------------------------------------------ coverage
    def _coverage(self) -> None:
        """sketched_params / trainable_params = sketched_fraction, over the
        model's distinct trainable parameters; warns under COVERAGE_WARN,
        naming the largest unsketched modules."""
        if self.sample == "per_microbatch":
            sketched = {id(p) for p in self.params}
        else:
            sketched = {id(p) for layer in self.layers for p in layer.params if p.requires_grad}
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.trainable_params = sum(p.numel() for _, p in trainable)
        self.sketched_params = sum(p.numel() for _, p in trainable if id(p) in sketched)
        self.sketched_fraction = (self.sketched_params / self.trainable_params
                                  if self.trainable_params else 1.0)
        missing: Dict[str, int] = {}
        for n, p in trainable:
            if id(p) not in sketched:
                owner = n.rpartition(".")[0]
                owner = self._functional.get(id(self.model.get_submodule(owner)), owner)
                missing[owner] = missing.get(owner, 0) + p.numel()
        # By owning module (a MultiheadAttention's out_proj folded into it), largest first.
        self.unsketched = sorted(missing.items(), key=lambda kv: (-kv[1], kv[0]))
        if self.sketched_fraction < COVERAGE_WARN:
            def label(owner):
                m = self.model.get_submodule(owner) if owner else self.model
                return f"{owner or '<model>'} ({type(m).__name__}, {missing[owner]:,})"
            top = ", ".join(label(o) for o, _ in self.unsketched[:5])
            more = len(self.unsketched) - 5
            warnings.warn(
                f"spotter: the {self.sample.replace('_', '-')} sketch covers "
                f"{self.sketched_fraction:.1%} of the trainable parameters "
                f"({self.sketched_params:,} of {self.trainable_params:,}); largest unsketched: "
                f"{top}{f' and {more} more' if more > 0 else ''}. Only Linear/Conv2d layers are "
                f"sketched per example; sample='per_microbatch' sketches every parameter")

    def fraction_label(self) -> str:
        """sketched_fraction with 3 decimals, rounded down ("1.000" only when
        every trainable parameter is sketched)."""
        if not self.trainable_params:
            return "1.000"
        return "%.3f" % (self.sketched_params * 1000 // self.trainable_params / 1000)

    def _check_fired(self) -> None:
        """Once, on the first captured step: a tapped layer whose weight got a
        gradient although its forward hook never ran is used functionally
        (F.linear(x, m.weight)); its gradient is missing from the sketch."""
        self._checked_fired = True
        silent = [layer.name for layer in self.layers if not layer.fired
                  and layer.module.weight.grad is not None and bool(layer.module.weight.grad.any())]
        if silent:
            warnings.warn(f"spotter: layers {silent} received gradients but their forward hooks "
                          "never ran (the weights are used functionally): their gradients are not "
                          "in the per-example sketch, though counted in input_dim")

    # ------------------------------------------------------------- control
    def begin_step(self, sketch: bool, factors: bool) -> None:
        """Sets what the next forward/backward passes capture; clears the last."""
        self.sketch, self.factors = sketch, factors
        self.pass_id = -1
        self.pass_sizes = []
        self.rows = {}
        for layer in self.layers:
            layer.stack.clear()
            layer.A = layer.G = None
            layer.factor_n = 0

    def collect_rows(self, max_rows: int, to_host: bool = True):
        """(rows (m, k) float32 tensor, samples_per_row) of the captured step,
        or (None, 0) if nothing was captured. The rows are on the CPU, or,
        with ``to_host=False``, left on the gradients' device (no device-to-
        host copy: the Monitor stages them asynchronously, see _Staged)."""
        if not self.rows:
            return None, 0
        if not self._checked_fired:
            self._check_fired()
        ids = sorted(self.rows)
        if self.sample == "per_example":
            rows = torch.cat([self.rows[i] for i in ids], dim=0)[:max_rows]
            return self._placed(rows, to_host), 1
        rows = torch.stack([self.rows[i] for i in ids])[:max_rows]
        sizes = [self.pass_sizes[i] for i in ids if i < len(self.pass_sizes)]
        spr = max(1, round(sum(sizes) / len(sizes))) if sizes else 1
        return self._placed(rows, to_host), spr

    @staticmethod
    def _placed(rows: torch.Tensor, to_host: bool) -> torch.Tensor:
        if to_host:
            return rows.detach().to("cpu", torch.float32)
        return rows.detach().to(torch.float32)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # --------------------------------------------------------------- hooks
    def _pre_forward(self, module, inputs):
        if not (self.sketch or self.factors) or not torch.is_grad_enabled():
            return
        self.pass_id += 1
        first = next((x for x in inputs if torch.is_tensor(x)), None)
        self.pass_sizes.append(int(first.shape[0]) if first is not None and first.dim() else 1)

    def _ensure_maps(self, layer: Layer, device) -> None:
        if layer.map_in is None or layer.map_in.device != device:
            layer.map_in = _Map(splitmix64_at(self.seed, 2 * layer.index), layer.d_in,
                                self.k_in, device)
            layer.map_out = _Map(splitmix64_at(self.seed, 2 * layer.index + 1), layer.d_out,
                                 self.k_out, device)

    def _forward_hook(self, layer: Layer):
        def hook(module, inputs, output):
            # Per microbatch, the parameter hooks sketch: a layer needs its
            # input (and a backward hook) only for K-FAC factors.
            if not ((self.sketch and self.sample == "per_example") or self.factors) \
                    or not torch.is_grad_enabled() \
                    or not torch.is_tensor(output) or not output.requires_grad:
                return
            x = inputs[0].detach()
            batch = x.shape[0] if x.dim() > 1 else 1
            with torch.no_grad():
                proj = None
                if self.sketch and self.sample == "per_example":
                    self._ensure_maps(layer, x.device)
                    cols = layer.input_columns(x)  # (d_in - bias, B, T)
                    proj = layer.map_in.project(cols, module.bias is not None)  # (B, T, k_in)
                if self.factors:
                    a = layer.inputs(x).float()
                    flat = a.reshape(-1, a.shape[-1])
                    aa = flat.t() @ flat / flat.shape[0]
                    layer.A = aa if layer.A is None else layer.A + aa
                    layer.factor_n += 1
            layer.fired = True
            layer.stack.append((self.pass_id, proj, batch))
            output.register_hook(self._backward_hook(layer))
        return hook

    def _backward_hook(self, layer: Layer):
        def hook(grad):
            if not layer.stack:
                return None
            pass_id, proj, batch = layer.stack.pop()
            scale = batch if self.loss_scale == "mean" else None
            g = grad.detach()
            with torch.no_grad():
                if self.factors:
                    d = layer.out_grads(g).float()
                    if scale is not None:
                        d = d * scale
                    flat = d.reshape(-1, d.shape[-1])
                    gg = flat.t() @ flat / flat.shape[0]
                    layer.G = gg if layer.G is None else layer.G + gg
                if proj is not None:
                    self._ensure_maps(layer, g.device)
                    # (B, T, k_out) of the output gradients times the batch
                    # size (mean loss): the map's entries are +-batch.
                    dp = layer.map_out.project(layer.grad_columns(g), False, scale)
                    ex = torch.bmm(dp.transpose(1, 2), proj).reshape(proj.shape[0], -1)
                    acc = self.rows.get(pass_id)
                    if acc is None:
                        self.rows[pass_id] = ex
                    else:
                        acc += ex
            return None
        return hook

    def _param_hook(self, offset: int):
        def hook(grad):
            if not self.sketch or self.pass_id < 0:
                return None
            with torch.no_grad():
                if self.flat is None or self.flat.bucket.device != grad.device:
                    self.flat = CountSketch(self.seed, self.input_dim, self.k, grad.device)
                row = self.rows.get(self.pass_id)
                if row is None:
                    row = self.rows[self.pass_id] = torch.zeros(
                        self.k, dtype=torch.float64, device=grad.device)
                self.flat.accumulate(row, grad.reshape(-1), offset)
            return None
        return hook
