"""The Monitor's directives as a job holds them: one list every rank adopts at
the same steps, handed from rank 0 through torch.distributed, and the state
a resumed job restores (Monitor.state_dict / load_state_dict).

Adoption. A directive is *adopted* at a step ``a``; it applies from
``max(effective_step, a)``. The directive in force at step t is, among the
adopted ones that apply at t, the one with the highest (generation, version).
A directive adopted after its effective step is *late*: it applies from its
adoption step.

* Broadcast (``Monitor(directives="broadcast")``, the default in a
  distributed job): only rank 0 holds a session. At the step boundary before
  every step t with t % sync_every == 0 (and at construction, for step 0)
  rank 0 broadcasts the directives its session holds that the job has not
  adopted yet; every rank adopts them at t. Nothing new: one broadcast of one
  int64. Something new: a second broadcast of its bytes. Every rank applies
  from the same adopted list, so all switch at the same step or none does.
* Per rank / one process: each rank adopts what its own session holds, at
  every step boundary (no collective), as before.

Not thread-safe: used from the training thread.
"""
from __future__ import annotations

import collections
import dataclasses
import pickle
import statistics
import time
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from spotter._proto import pb
from spotter.schedule import Directive, decode_checkpoint, encode_checkpoint

#: Version of the Monitor.state_dict() layout.
STATE_VERSION = 1


@dataclasses.dataclass
class Applied:
    """A directive switch as the Monitor applied it."""
    step: int              # first step it was applied at
    version: int
    phase: str
    lr: float              # the LR at that step
    optimizer: str         # "keep" or "natural_gradient"
    late: bool             # received after its effective_step had passed
    generation: int = 0    # > 0: from a run the server re-created (see RunSession)


class DirectiveLog:
    """The adopted directives, each with the step it was adopted at."""

    def __init__(self):
        self.entries: List[Tuple[Directive, int]] = []
        self._keys = set()

    def adopt(self, directives: Iterable[Directive], step: int) -> List[Directive]:
        """Adopts the non-advisory ``directives`` not adopted yet at ``step``;
        returns them."""
        new = []
        for d in directives:
            if not d.advisory and d.key not in self._keys:
                self._keys.add(d.key)
                self.entries.append((d, int(step)))
                new.append(d)
        return new

    def known(self, key) -> bool:
        return key in self._keys

    def at(self, step: int) -> Optional[Directive]:
        """The directive in force at ``step``, or None."""
        best = None
        for d, a in self.entries:
            if max(d.effective_step, a) <= step and (best is None or d.key > best.key):
                best = d
        return best

    def adopted_at(self, key) -> Optional[int]:
        return next((a for d, a in self.entries if d.key == key), None)

    # -------------------------------------------------------------- state
    def state(self) -> List[dict]:
        return [dict(directive=d.to_proto().SerializeToString(), generation=d.generation,
                     adopted=a) for d, a in self.entries]

    def load(self, state: List[dict]) -> int:
        """Replaces the entries by a saved list. Generations are renumbered so
        that the newest saved one is 0: a resumed process's session starts at
        generation 0 with the run as the server has it now. Returns the
        newest saved generation (subtracted from all)."""
        top = max((int(e["generation"]) for e in state), default=0)
        self.entries, self._keys = [], set()
        for e in state:
            d = Directive.from_proto(pb.Directive.FromString(bytes(e["directive"])),
                                     int(e["generation"]) - top)
            self.entries.append((d, int(e["adopted"])))
            self._keys.add(d.key)
        return top


def _encode(directives: List[Directive]) -> bytes:
    if not directives:
        return b""
    return pickle.dumps([(d.generation, d.to_proto().SerializeToString()) for d in directives])


def _decode(data: bytes) -> List[Directive]:
    if not data:
        return []
    return [Directive.from_proto(pb.Directive.FromString(b), g) for g, b in pickle.loads(data)]


class GroupSync:
    """Rank 0's new directives to every rank of the default process group
    (gloo: CPU tensors; NCCL: tensors on the current CUDA device)."""

    def __init__(self, src: int = 0):
        dist = torch.distributed
        self.dist, self.src = dist, src
        self.rank = dist.get_rank()
        backend = str(dist.get_backend()).lower()
        self.device = torch.device("cuda", torch.cuda.current_device()) \
            if backend == "nccl" else torch.device("cpu")
        self.count = 0
        self.seconds = 0.0
        self.bytes = 0
        self.max_seconds = 0.0
        self.recent = collections.deque(maxlen=1024)  # the last syncs' seconds

    def exchange(self, directives: Optional[List[Directive]], record: bool = True
                 ) -> List[Directive]:
        """Collective: rank ``src`` passes the directives to hand out, the
        others None; every rank gets them (decoded from the same bytes).
        ``record``: count it in stats() (not the start-up one, which waits
        for rank 0's first directive)."""
        t0 = time.perf_counter()
        data = _encode(directives or []) if self.rank == self.src else b""
        n = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        self.dist.broadcast(n, self.src)
        size = int(n.item())
        if size:
            if self.rank == self.src:
                buf = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy()).to(self.device)
            else:
                buf = torch.empty(size, dtype=torch.uint8, device=self.device)
            self.dist.broadcast(buf, self.src)
            data = buf.cpu().numpy().tobytes()
        dt = time.perf_counter() - t0
        if not record:
            return _decode(data)
        self.count += 1
        self.seconds += dt
        self.max_seconds = max(self.max_seconds, dt)
        self.recent.append(dt)
        self.bytes += size
        return _decode(data)

    def stats(self) -> Dict[str, float]:
        return dict(syncs=self.count, sync_seconds=self.seconds, sync_bytes=self.bytes,
                    sync_max_seconds=self.max_seconds,
                    sync_median_seconds=statistics.median(self.recent) if self.recent else 0.0)


def session_resume(saved: Optional[bytes], run: str, rank: int) -> Optional[bytes]:
    """A saved session checkpoint for this ``rank``: every rank of a job holds
    the same directives, so the checkpoint of rank 0 (the one a job usually
    saves) is re-encoded for the others."""
    if not saved:
        return None
    c = pb.SessionCheckpoint.FromString(bytes(saved))
    if c.rank == rank:
        return bytes(saved)
    step, held = decode_checkpoint(saved, run, c.rank)
    return encode_checkpoint(run, rank, step, held)


# ------------------------------------------------------------------ K-FAC
def kfac_state(kfac) -> Optional[dict]:
    """K-FAC's running factors, eigendecompositions and settings (or None)."""
    if kfac is None:
        return None
    return dict(A={k: v.clone() for k, v in kfac.A.items()},
                G={k: v.clone() for k, v in kfac.G.items()},
                eig={k: tuple(t.clone() for t in e) for k, e in kfac.eig.items()},
                damping=kfac.damping, factor_update_interval=kfac.factor_update_interval,
                inverse_update_interval=kfac.inverse_update_interval,
                factor_updates=kfac.factor_updates, inverse_updates=kfac.inverse_updates,
                last_nu=kfac.last_nu, failures=kfac.failures)


def load_kfac_state(kfac, state: dict) -> None:
    """Restores kfac_state() into ``kfac`` (tensors moved to its layers' devices)."""
    devices = {layer.index: layer.module.weight.device for layer in kfac.layers}

    def dev(k):
        return devices.get(k, torch.device("cpu"))
    kfac.A = {k: v.to(dev(k)) for k, v in state["A"].items()}
    kfac.G = {k: v.to(dev(k)) for k, v in state["G"].items()}
    kfac.eig = {k: tuple(t.to(dev(k)) for t in e) for k, e in state["eig"].items()}
    kfac.damping = float(state["damping"])
    kfac.factor_update_interval = int(state["factor_update_interval"])
    kfac.inverse_update_interval = int(state["inverse_update_interval"])
    for name in ("factor_updates", "inverse_updates", "last_nu", "failures"):
        setattr(kfac, name, state[name])
