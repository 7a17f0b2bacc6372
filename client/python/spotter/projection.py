"""The run's random projections, bit for bit as docs/PROJECTION.md specifies
(core/projection/projection.{h,cc} is the C++ reference).

  SplitMix64 output j of seed s:  Mix64(s + (j + 1) * 0x9E3779B97F4A7C15 mod 2^64)
  CountSketch, coordinate j -> k buckets:  h = output j;
      bucket = ((h >> 32) * k) >> 32,  sign = -1 if h & 1 else +1;
      y[bucket] += sign * x[j], summed in float64 in coordinate order, rounded
      once to float32.
  Gaussian, entry (b, j):  n = j * k + b,
      u1 = ((output(2n) >> 11) + 1) * 2^-53,  u2 = (output(2n + 1) >> 11) * 2^-53,
      z = sqrt(-2 ln u1) cos(2 pi u2);  y = (sum_j z_bj x_j) / sqrt(k), float64
      then rounded once to float32.

Two implementations:
  * slow pure-Python references (``*_reference``) with exact integer hashing,
    used by the tests;
  * torch implementations that run on the gradient's device: the hash is
    computed in int64 with wrapping multiplication and masked (logical) shifts,
    the accumulation in float64. On CPU torch's index_add_ adds in index order,
    so CountSketch matches the C++ reference bit for bit; on a GPU the float64
    atomics may add in another order (differences below float32 resolution
    except in rare ties). The Gaussian uses torch's log/cos, which may differ
    from the C library's in the last float64 bit; after the float32 rounding
    the outputs agree except in rare ties.

Thread-safety: projection objects are immutable after construction.
"""
from __future__ import annotations

import math
import struct
from typing import Optional, Sequence

GOLDEN = 0x9E3779B97F4A7C15
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1
INV53 = 1.0 / 9007199254740992.0  # 2^-53


# ----------------------------------------------------------------- references
def mix64(z: int) -> int:
    """SplitMix64's finaliser on a 64-bit unsigned integer."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * M1) & MASK64
    z = ((z ^ (z >> 27)) * M2) & MASK64
    return z ^ (z >> 31)


def splitmix64_at(seed: int, j: int) -> int:
    """Output j (j = 0, 1, ...) of SplitMix64 seeded with ``seed``."""
    return mix64((seed + (j + 1) * GOLDEN) & MASK64)


def count_sketch_cell(seed: int, j: int, k: int):
    """(bucket, sign) of input coordinate j under CountSketch(seed) to k dims."""
    h = splitmix64_at(seed, j)
    return ((h >> 32) * k) >> 32, (-1.0 if h & 1 else 1.0)


def gaussian_entry(seed: int, j: int, b: int, k: int) -> float:
    """Entry (b, j) of the Gaussian map before the 1/sqrt(k) scale."""
    n = j * k + b
    u1 = ((splitmix64_at(seed, 2 * n) >> 11) + 1) * INV53
    u2 = (splitmix64_at(seed, 2 * n + 1) >> 11) * INV53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def count_sketch_reference(seed: int, x: Sequence[float], k: int) -> list:
    """y = S x for one vector, the slow exact way (Python ints and floats)."""
    acc = [0.0] * k
    for j, xj in enumerate(x):
        b, s = count_sketch_cell(seed, j, k)
        acc[b] += s * _f32(xj)
    return [_f32(a) for a in acc]


def gaussian_reference(seed: int, x: Sequence[float], k: int) -> list:
    """y = S x for the Gaussian map, the slow way (Python's libm)."""
    acc = [0.0] * k
    for j, xj in enumerate(x):
        xj = _f32(xj)
        for b in range(k):
            acc[b] += gaussian_entry(seed, j, b, k) * xj
    scale = 1.0 / math.sqrt(k)
    return [_f32(a * scale) for a in acc]


# ---------------------------------------------------------------------- torch
def _signed(c: int) -> int:
    return c - (1 << 64) if c >= (1 << 63) else c


def _srl(x, s: int):
    """Logical right shift of an int64 tensor holding uint64 bit patterns."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def splitmix64_torch(seed: int, j):
    """Output j of SplitMix64(seed) for an int64 tensor of indices j (>= 0), as
    int64 tensors holding the uint64 bit patterns. Wrapping int64 arithmetic."""
    import torch
    z = (j + 1) * _signed(GOLDEN) + _signed(seed & MASK64)
    z = (z ^ _srl(z, 30)) * _signed(M1)
    z = (z ^ _srl(z, 27)) * _signed(M2)
    return z ^ _srl(z, 31)


def count_sketch_hash(seed: int, start: int, length: int, k: int, device=None):
    """(bucket int64, sign float32) tensors for coordinates [start, start +
    length) of CountSketch(seed) to k dims, computed on ``device``."""
    import torch
    j = torch.arange(start, start + length, dtype=torch.int64, device=device)
    h = splitmix64_torch(seed, j)
    bucket = (_srl(h, 32) * k) >> 32
    sign = 1.0 - 2.0 * (h & 1).to(torch.float32)
    return bucket, sign


def gaussian_block(seed: int, j0: int, j1: int, k: int, device=None, libm: str = "torch"):
    """Float64 tensor (j1 - j0, k): entries z_{b,j} of the Gaussian map (before
    the 1/sqrt(k) scale) for coordinates j in [j0, j1).

    libm="torch" evaluates log/cos with torch on ``device`` (may differ from
    the C library in the last float64 bit); libm="c" evaluates them with
    Python's math module, i.e. the C library the C++ reference uses (CPU,
    about 10x slower than torch's), which matches it bit for bit."""
    import torch
    j = torch.arange(j0, j1, dtype=torch.int64, device=device)
    b = torch.arange(k, dtype=torch.int64, device=device)
    n = j[:, None] * k + b[None, :]
    o1 = splitmix64_torch(seed, 2 * n)
    o2 = splitmix64_torch(seed, 2 * n + 1)
    u1 = (_srl(o1, 11) + 1).to(torch.float64) * INV53
    u2 = _srl(o2, 11).to(torch.float64) * INV53
    if libm == "c":
        two_pi = 2.0 * math.pi
        z = [math.sqrt(-2.0 * math.log(a)) * math.cos(two_pi * c)
             for a, c in zip(u1.reshape(-1).tolist(), u2.reshape(-1).tolist())]
        return torch.tensor(z, dtype=torch.float64).reshape(u1.shape).to(u1.device)
    if libm != "torch":
        raise ValueError("libm must be 'torch' or 'c'")
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)


class CountSketch:
    """CountSketch(seed) from input_dim to output_dim, on ``device``.

    The hash of all input_dim coordinates is computed once (8 + 4 bytes per
    coordinate on the device). Immutable; thread-safe.
    """
    kind = "count_sketch"

    def __init__(self, seed: int, input_dim: int, output_dim: int, device=None):
        if input_dim < 1 or output_dim < 1:
            raise ValueError("input_dim and output_dim must be >= 1")
        self.seed, self.input_dim, self.output_dim = int(seed), int(input_dim), int(output_dim)
        self.bucket, self.sign = count_sketch_hash(self.seed, 0, self.input_dim,
                                                   self.output_dim, device)

    def accumulate(self, acc, x, offset: int = 0):
        """acc (m, k) float64 += S[:, offset:offset + n] x for x (m, n) (or a
        vector (n,) into acc (k,)). Adds in coordinate order; returns acc."""
        import torch
        n = x.shape[-1]
        if offset < 0 or offset + n > self.input_dim:
            raise ValueError(f"coordinates [{offset}, {offset + n}) outside [0, {self.input_dim})")
        bucket = self.bucket[offset:offset + n]
        # x in float64 (a copy), times the +-1 signs in place: exact, and no
        # float64 copy of the signs.
        src = x.to(torch.float64, copy=True).mul_(self.sign[offset:offset + n])
        if x.dim() == 1:
            return acc.index_add_(0, bucket, src)
        m = x.shape[0]
        flat_idx = (torch.arange(m, device=x.device)[:, None] * self.output_dim + bucket[None, :])
        acc.view(-1).index_add_(0, flat_idx.reshape(-1), src.reshape(-1))
        return acc

    def __call__(self, x):
        """S x for x (..., input_dim) of any float dtype: float32 (..., k)."""
        import torch
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"last dim {x.shape[-1]} != input_dim {self.input_dim}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.input_dim)
        acc = torch.zeros(x2.shape[0], self.output_dim, dtype=torch.float64, device=x.device)
        self.accumulate(acc, x2)
        return acc.to(torch.float32).reshape(*lead, self.output_dim)


class GaussianProjection:
    """The dense Gaussian map (the reference kind): O(input_dim * k) work per
    vector; the entries are regenerated in blocks of ``block`` coordinates
    rather than stored. ``libm``: see gaussian_block(); the default is "c"
    (bit-exact with the C++ reference) for CPU tensors and "torch" elsewhere.
    Immutable; thread-safe."""
    kind = "gaussian"

    def __init__(self, seed: int, input_dim: int, output_dim: int, device=None,
                 block: int = 4096, libm: Optional[str] = None):
        if input_dim < 1 or output_dim < 1:
            raise ValueError("input_dim and output_dim must be >= 1")
        self.seed, self.input_dim, self.output_dim = int(seed), int(input_dim), int(output_dim)
        self.device = device
        self.block = block
        self.libm = libm

    def accumulate(self, acc, x, offset: int = 0):
        """acc (m, k) float64 += (unscaled) Z[:, offset:offset+n] x; returns acc.
        Coordinates are added one at a time, in order (as the C++ code does)."""
        import torch
        x2 = x.reshape(-1, x.shape[-1]).to(torch.float64)
        a2 = acc.view(-1, self.output_dim)
        n = x2.shape[1]
        for j0 in range(0, n, self.block):
            j1 = min(n, j0 + self.block)
            libm = self.libm or ("c" if x.device.type == "cpu" else "torch")
            z = gaussian_block(self.seed, offset + j0, offset + j1, self.output_dim, x.device, libm)
            for j in range(j1 - j0):
                a2 += x2[:, j0 + j, None] * z[j][None, :]
        return acc

    def __call__(self, x):
        import torch
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"last dim {x.shape[-1]} != input_dim {self.input_dim}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.input_dim)
        acc = torch.zeros(x2.shape[0], self.output_dim, dtype=torch.float64, device=x.device)
        self.accumulate(acc, x2)
        return (acc * (1.0 / math.sqrt(self.output_dim))).to(torch.float32).reshape(
            *lead, self.output_dim)

    def finish(self, acc):
        """The float32 output of an accumulator filled by accumulate()."""
        import torch
        return (acc * (1.0 / math.sqrt(self.output_dim))).to(torch.float32)


def make_projection(kind: str, seed: int, input_dim: int, output_dim: int, device=None, **kw):
    """CountSketch or GaussianProjection by kind name ("count_sketch",
    "gaussian"). SRHT is not implemented in Python: ValueError."""
    if kind == "count_sketch":
        return CountSketch(seed, input_dim, output_dim, device)
    if kind == "gaussian":
        return GaussianProjection(seed, input_dim, output_dim, device, **kw)
    raise ValueError(f"projection kind {kind!r}: the Python client implements "
                     "'count_sketch' and 'gaussian'")
