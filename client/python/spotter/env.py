"""spotter.env: defaults from torchrun and from the SPOTTER_* environment variables.

Each value is taken from the first source that has it, left to right:
explicit argument > torch.distributed (process group initialised) >
environment > default.

  rank        rank=        dist.get_rank()        RANK                   0
  world size  world_size=  dist.get_world_size()  WORLD_SIZE             1
  local rank  local_rank=  -                      LOCAL_RANK             0 when world size is 1,
                                                                         else None (unknown)
  run name    run=         -                      SPOTTER_RUN, then      ValueError asking
                                                  TORCHELASTIC_RUN_ID    for a name
                                                  unless it is "none"
  server      server=,     -                      SPOTTER_SERVER         "127.0.0.1:50051"
              target=
  token       token=       -                      SPOTTER_TOKEN          None (no token)

An empty environment variable counts as unset; an explicit ``token=""`` means
"send no token" even when SPOTTER_TOKEN is set.

Rank and world size while a process group is initialised are the group's: an
explicit value must agree with it (ValueError otherwise). Without one,
``WORLD_SIZE > 1`` in the environment (torchrun, or any launcher that sets it)
and no explicit rank/world_size is an error (RuntimeError): the process is one
rank of a multi-process job that has not called
``torch.distributed.init_process_group`` yet, and opening the run as rank 0 of 1
would be wrong.

Nothing here imports torch: the process group is looked up only when the
program has imported ``torch.distributed`` already.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional, Tuple

#: spotterd's default listen address.
DEFAULT_SERVER = "127.0.0.1:50051"

#: The run id torchrun passes (TORCHELASTIC_RUN_ID) when no --rdzv-id was given.
TORCHRUN_DEFAULT_RUN_ID = "none"


class _FromEnv:
    """Sentinel default: "resolve from the environment" (distinct from None)."""

    def __repr__(self) -> str:
        return "spotter.env.FROM_ENV"


FROM_ENV = _FromEnv()


def _env(name: str) -> Optional[str]:
    v = os.environ.get(name)
    return v if v else None


def _env_int(name: str) -> Optional[int]:
    v = _env(name)
    if v is None:
        return None
    try:
        return int(v.strip())
    except ValueError:
        raise ValueError(f"spotter: environment variable {name}={v!r} is not an integer") from None


def process_group() -> Optional[Tuple[int, int]]:
    """(rank, world_size) of the default torch.distributed process group when
    it is initialised, else None. Does not import torch."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist.get_rank(), dist.get_world_size()


def server(explicit: Optional[str] = None) -> str:
    """spotterd's "host:port": ``explicit``, else SPOTTER_SERVER, else 127.0.0.1:50051."""
    if explicit is not None and explicit is not FROM_ENV:
        return explicit
    return _env("SPOTTER_SERVER") or DEFAULT_SERVER


def token(explicit: Optional[str] = None) -> Optional[str]:
    """The bearer token: ``explicit`` ("" = none), else SPOTTER_TOKEN, else None."""
    if explicit is not None and explicit is not FROM_ENV:
        return explicit or None
    return _env("SPOTTER_TOKEN")


def run_name(explicit: Optional[str] = None) -> str:
    """The run name: ``explicit``, else SPOTTER_RUN, else torchrun's
    TORCHELASTIC_RUN_ID (its --rdzv-id; a fresh UUID under --standalone)
    unless it is torchrun's default "none". ValueError when there is none."""
    if explicit:
        return explicit
    v = _env("SPOTTER_RUN")
    if v:
        return v
    v = _env("TORCHELASTIC_RUN_ID")
    if v and v.strip() != TORCHRUN_DEFAULT_RUN_ID:
        return v.strip()
    raise ValueError("spotter: no run name: pass run=..., or set SPOTTER_RUN (under torchrun, "
                     "--rdzv-id sets TORCHELASTIC_RUN_ID, which is used when it is not 'none')")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this process is in the job."""
    rank: int
    world_size: int
    local_rank: Optional[int]   # None: unknown (no LOCAL_RANK in a multi-process job)
    source: str                 # of rank/world size: "torch.distributed", "explicit",
                                # "environment" or "default"
    distributed: bool           # a torch.distributed process group is initialised


def placement(rank: Optional[int] = None, world_size: Optional[int] = None,
              local_rank: Optional[int] = None) -> Placement:
    """Resolves rank, world size and local rank (table in the module doc).

    Raises ValueError when an explicit value contradicts the initialised
    process group or is out of range, RuntimeError when WORLD_SIZE > 1 in the
    environment but no process group is initialised and neither rank nor
    world_size was given."""
    pg = process_group()
    if pg is not None:
        for name, given, actual in (("rank", rank, pg[0]), ("world_size", world_size, pg[1])):
            if given is not None and int(given) != actual:
                raise ValueError(f"spotter: {name}={given} was passed, but the initialised "
                                 f"torch.distributed process group has {name} {actual}")
        r, w, source = pg[0], pg[1], "torch.distributed"
    else:
        env_w, env_r = _env_int("WORLD_SIZE"), _env_int("RANK")
        if rank is None and world_size is None and env_w is not None and env_w > 1:
            raise RuntimeError(
                f"spotter: WORLD_SIZE={env_w} in the environment (torchrun?) but torch.distributed "
                "is not initialized: call torch.distributed.init_process_group() before building "
                "the Monitor, or pass rank= and world_size= explicitly")
        if rank is not None or world_size is not None:
            source = "explicit"
        elif env_w is not None or env_r is not None:
            source = "environment"
        else:
            source = "default"
        w = int(world_size) if world_size is not None else (env_w if env_w is not None else 1)
        r = int(rank) if rank is not None else (env_r if env_r is not None else 0)
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"spotter: rank {r} / world size {w} ({source}): need 0 <= rank < world_size")
    if local_rank is None:
        local_rank = _env_int("LOCAL_RANK")
    if local_rank is None and w == 1:
        local_rank = 0
    return Placement(r, w, None if local_rank is None else int(local_rank), source, pg is not None)


def rank(explicit: Optional[int] = None) -> int:
    """This process's rank (see placement())."""
    return placement(rank=explicit).rank


def world_size(explicit: Optional[int] = None) -> int:
    """The job's world size (see placement())."""
    return placement(world_size=explicit).world_size


def local_rank(explicit: Optional[int] = None) -> Optional[int]:
    """This process's rank on its node, None when unknown (see placement())."""
    return placement(local_rank=explicit).local_rank
