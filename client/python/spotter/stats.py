"""SessionStats: the counters of a RunSession (spotter.session)."""
import dataclasses
from typing import Dict


@dataclasses.dataclass
class SessionStats:
    """Counters of one session (a snapshot; see RunSession.stats()). The same
    fields, in the same order, as the C++ spotter::SessionStats. The counters
    are monotonic; queued and connected describe the moment."""
    enqueued: int = 0          # uploads accepted into the queue (sketches + evals)
    sent: int = 0              # uploads written to a stream, replays included
    acked: int = 0             # uploads acknowledged (applied, rejected or duplicate)
    acked_seq: int = 0         # highest seq the server acknowledged
    replayed: int = 0          # uploads re-sent after a reconnect
    dropped: int = 0           # uploads dropped because the queue was full
    dropped_closed: int = 0    # uploads refused after close(), the run's end or an error
    dropped_invalid: int = 0   # uploads refused locally (non-finite values)
    rejects: int = 0           # Rejects received
    rejected: Dict[str, int] = dataclasses.field(default_factory=dict)  # by reason
    last_reject: str = ""      # message of the latest Reject
    connects: int = 0          # streams opened (1 + reconnects)
    reconnects: int = 0        # streams opened after the first
    heartbeats: int = 0        # heartbeats sent
    directives: int = 0        # distinct directives received (advisory included)
    diagnostics: int = 0       # trajectory points received
    queued: int = 0            # uploads waiting to be acked now
    connected: bool = False    # a stream is open and welcomed now
    last_error: str = ""       # latest stream or RPC error
