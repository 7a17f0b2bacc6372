"""spotter.RunSession: one rank's connection to one run.

The C++ client (client/cpp/run_session.h) has the same names, counters,
defaults and drop policy; docs/CLIENTS.md has the table of both.

Architecture (conventions: a request queue, a response thread, a callback):

  training thread            background thread              gRPC's sender
  ---------------            -----------------              -------------
  upload_sketch() --+        OpenRun (retried), then        request iterator:
  report_eval()   --+-> bounded deque of unacked   <----    Hello, wait for
  note_step()        |   uploads                             Welcome, then every
  directive_at()  <--+-- directive mailbox    <--- reads     unsent upload, or a
  lr_at()                 (list, under a lock)     responses Heartbeat when idle
                                                   Welcome/Ack/Reject/
                                                   Directive/Diagnostics

* Nothing the training thread calls blocks on the network: uploads go to a
  bounded deque; when it is full the oldest queued sketch is dropped and
  counted (``drop="oldest"``, the default), or the new upload is
  (``drop="newest"``); eval reports only when nothing else is queued.
* Seqs are per rank, shared by sketches and eval reports, increasing; an
  upload gets its seq when first sent, continuing from the first Welcome's
  last_seq. An evicted upload already sent leaves a gap (the protocol allows
  it). Acks are cumulative; uploads stay queued until acked, and after a
  reconnect those above Welcome.last_seq are replayed in order.
* After a transient failure the stream is reopened with jittered exponential
  backoff (the run too, with the same config, if the server lost it); while
  disconnected, directive_at() answers from what it has (fail-open).
* Directives wait in a mailbox; directive_at(step) is the one in force (the
  highest version with effective_step <= step). Advisory (ADVISE-mode)
  directives are exposed through advice(), never by directive_at().
* close() stops uploads, waits (bounded) for the acks, sends a last Heartbeat,
  half-closes and joins the thread; nothing is done in __del__.

Thread-safety: every public method may be called from any thread.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import random
import threading
import time
from typing import Callable, List, Mapping, Optional

import grpc
import numpy as np

from spotter import env as _env
from spotter._proto import pb, pb_grpc
from spotter.client import (DEFAULT_CHANNEL_OPTIONS, RUN_HEADER, ConfigLike, SpotterError, channel,
                            run_config)
from spotter.encoding import ENCODINGS, encode_rows
from spotter.mailbox import DirectiveMailbox
from spotter.schedule import Directive, decode_checkpoint
from spotter.stats import SessionStats

log = logging.getLogger("spotter")

#: Status codes after which retrying cannot help: the session stops trying and
#: keeps training under the last directive (``error`` says why).
PERMANENT_CODES = frozenset(getattr(grpc.StatusCode, name) for name in (
    "INVALID_ARGUMENT", "FAILED_PRECONDITION", "PERMISSION_DENIED", "UNAUTHENTICATED",
    "UNIMPLEMENTED", "OUT_OF_RANGE"))

@dataclasses.dataclass
class _Upload:
    step: int
    kind: str  # "sketch" or "eval"
    request: "pb.ConnectRequest"
    seq: int = 0  # 0 until first sent


class RunSession(DirectiveMailbox):
    """Opens (or joins) a run and keeps one Connect stream to it.

    Args:
      target: spotterd's "host:port"; None: SPOTTER_SERVER, else
        127.0.0.1:50051 (spotter.env).
      run: run name (1-128 of [A-Za-z0-9._-]); None: SPOTTER_RUN, else
        torchrun's TORCHELASTIC_RUN_ID (ValueError when neither is set).
      config: the RunConfig (proto, dict, or keyword fields below); every rank
        must pass the same one (OpenRun is idempotent only for an equal config).
      rank: this rank, 0 <= rank < config.world_size.
      projection: the ProjectionSpec the Hello carries; defaults to the config's.
      queue_size: most unacknowledged uploads held (queued or in flight).
      drop: what a full queue drops: "oldest" (evict the oldest queued sketch;
        the default) or "newest" (refuse the new upload).
      open_timeout: deadline of each OpenRun; the first is made in the
        constructor. Config errors raise SpotterError there; an unreachable
        server does not (unless require_server): the session keeps retrying in
        the background.
      backoff_initial, backoff_max: reconnect backoff bounds, seconds (doubling,
        +-20% jitter).
      heartbeat_interval: a Heartbeat (the rank's step) is sent after this many
        idle seconds.
      welcome_timeout: a stream without a Welcome after this long is reopened.
      on_directive(Directive), on_diagnostics(TrajectoryPoint): callbacks run on
        the session's thread; they must be quick and must not call close().
      token, root_certificates: auth and TLS, as for spotter.Client (token
        None: SPOTTER_TOKEN if set; "": none).
      incarnation: this process's Hello.incarnation (None: a random one). A new
        session after a restart is a new incarnation: its uploads are applied
        from seq 1, never taken for replays (docs/RESTARTS.md).
      resume: bytes from ``checkpoint()`` of the process this one resumes; its
        directives are in force at once, before the server is reached.
    """

    def __init__(self, target: Optional[str] = None, run: Optional[str] = None,
                 config: Optional[ConfigLike] = None, *,
                 rank: int = 0, projection: Optional["pb.ProjectionSpec"] = None,
                 queue_size: int = 256, drop: str = "oldest", open_timeout: float = 5.0,
                 require_server: bool = False, backoff_initial: float = 0.1,
                 backoff_max: float = 5.0, heartbeat_interval: float = 5.0,
                 welcome_timeout: float = 10.0,
                 on_directive: Optional[Callable[[Directive], None]] = None,
                 on_diagnostics: Optional[Callable[["pb.TrajectoryPoint"], None]] = None,
                 token: Optional[str] = None, root_certificates: Optional[bytes] = None,
                 client_name: str = "spotter-python/0.1", incarnation: Optional[int] = None,
                 resume: Optional[bytes] = None, **config_fields):
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if drop not in ("oldest", "newest"):
            raise ValueError("drop must be 'oldest' or 'newest'")
        self.target = target = _env.server(target)
        self.run = run = _env.run_name(run)
        token = _env.token(token)
        self.rank = int(rank)
        resumed = decode_checkpoint(resume, run, self.rank) if resume is not None else None
        self.config = run_config(config, **config_fields)
        self.projection = projection if projection is not None else self.config.projection
        self._queue_size = queue_size
        self._drop = drop
        self._open_timeout = open_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._heartbeat_interval = heartbeat_interval
        self._welcome_timeout = welcome_timeout
        self._on_directive = on_directive
        self._on_diagnostics = on_diagnostics
        self._client_name = client_name
        self._metadata = ((("authorization", f"Bearer {token}"),) if token else ()) + \
            ((RUN_HEADER, self.run),)
        self._channel = channel(target, root_certificates=root_certificates,
                                options=DEFAULT_CHANNEL_OPTIONS)
        self._stub = pb_grpc.SpotterServiceStub(self._channel)

        self._cv = threading.Condition()
        self._pending: "collections.deque[_Upload]" = collections.deque()
        self._send_idx = 0
        self._next_seq = 1           # set from the first Welcome's last_seq
        self._welcomed_once = False
        self._last_step = -1
        self._step = 0
        self._conn = 0               # id of the current stream (0: none)
        self._welcomed = 0           # id of the stream that got its Welcome
        self._call = None
        self._half_close = False     # close(): end the request stream
        self._closing = False
        self._closed = False
        self._opened = False
        self._ever_opened = False
        self._generation = 0
        self._last_version = 0       # highest directive version of this generation
        self._directives: List[Directive] = []
        self._advice: List[Directive] = []
        self._ended = False
        self._error: Optional[SpotterError] = None
        self._info = None            # RunInfo from OpenRun
        self._welcome = None
        self._latest_diagnostics = None
        self._stats = SessionStats()
        self.incarnation = int(incarnation) if incarnation else \
            random.SystemRandom().getrandbits(64) or 1
        if resumed is not None:
            self._step, held = resumed
            for d in held:
                (self._advice if d.advisory else self._directives).append(d)
                self._last_version = d.version

        try:
            self._open(open_timeout)
        except SpotterError as e:
            if require_server or e.code in PERMANENT_CODES:
                self._channel.close()
                raise
            log.warning("spotter: %s; training goes on, retrying in the background", e)
            self._stats.last_error = str(e)
        self._thread = threading.Thread(target=self._loop, name=f"spotter-{run}-r{rank}",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ uploads
    def upload_sketch(self, step: int, rows, *, loss: Optional[float] = math.nan,
                      lr: Optional[float] = math.nan, samples_per_row: int = 1,
                      encoding: str = "float32") -> bool:
        """Queues one SketchBatch: ``rows`` (m x k array-like of projected
        gradient samples, m >= 1) taken at optimizer ``step``. loss and lr NaN
        (or None) = not given. Never blocks on the network. Returns False when the upload was
        refused (closed session, ended run, non-finite values: counted) or the
        queue was full under drop="newest"; True when queued (under
        drop="oldest" an older sketch may have been dropped for it).
        Raises ValueError on a malformed call (not 2-D, step going backwards)."""
        a = rows.detach().cpu().numpy() if hasattr(rows, "detach") else np.asarray(rows)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"rows must be a non-empty 2-D array, got shape {a.shape}")
        loss = math.nan if loss is None else float(loss)
        lr = math.nan if lr is None else float(lr)
        if not np.isfinite(a).all() or math.isinf(loss) or math.isinf(lr):
            with self._cv:
                self._stats.dropped_invalid += 1
            log.warning("spotter: step %d: non-finite sketch, loss or lr, not uploaded", step)
            return False
        msg = pb.ConnectRequest()
        b = msg.sketch
        b.step = int(step)
        b.rows, b.cols = int(a.shape[0]), int(a.shape[1])
        b.encoding = ENCODINGS[encoding]
        b.data = encode_rows(a, encoding)
        b.loss, b.lr = loss, lr
        b.samples_per_row = int(samples_per_row)
        return self._enqueue(int(step), "sketch", msg)

    def report_nonfinite_loss(self, step: int, *, lr: Optional[float] = math.nan,
                              sketch_dim: int = 0) -> bool:
        """Tells the server the trainer's loss at ``step`` was NaN or infinite
        (e.g. natural gradient diverging): queues a SketchBatch flagged
        loss_non_finite with one zero row of the run's width (``sketch_dim``,
        0 = the effective config's), which the server counts for the
        divergence signal and the switch's guard and never sketches. As
        upload_sketch otherwise."""
        k = int(sketch_dim) or (int(self.info.config.sketch_dim) if self.info else 0) or 256
        lr = math.nan if lr is None or math.isinf(float(lr)) else float(lr)
        msg = pb.ConnectRequest()
        b = msg.sketch
        b.step, b.rows, b.cols = int(step), 1, k
        b.encoding = ENCODINGS["float32"]
        b.data = bytes(4 * k)
        b.loss, b.lr, b.loss_non_finite = math.nan, lr, True
        return self._enqueue(int(step), "sketch", msg)

    def report_eval(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Queues an EvalReport of validation ``metrics`` at ``step`` (e.g.
        {"val_loss": 0.3}). Non-finite values are refused (False, counted)."""
        vals = {str(k): float(v) for k, v in metrics.items()}
        if not all(math.isfinite(v) for v in vals.values()):
            with self._cv:
                self._stats.dropped_invalid += 1
            log.warning("spotter: step %d: non-finite metric in %s, not reported", step, vals)
            return False
        msg = pb.ConnectRequest()
        msg.eval.step = int(step)
        msg.eval.metrics.update(vals)
        return self._enqueue(int(step), "eval", msg)

    def note_step(self, step: int) -> None:
        """Tells the session the rank's current step (sent in heartbeats, so
        the server places effective steps ahead of ranks that do not upload).
        Heartbeats carry the highest of this and the last upload's step."""
        self._step = int(step)

    def _enqueue(self, step: int, kind: str, msg) -> bool:
        with self._cv:
            if step < self._last_step:
                raise ValueError(f"step {step} is before the last uploaded step {self._last_step}")
            if self._closing or self._ended or self._error is not None:
                self._stats.dropped_closed += 1
                return False
            if len(self._pending) >= self._queue_size:
                victim = None
                if self._drop == "oldest":
                    victim = next((i for i, u in enumerate(self._pending)
                                   if u.kind == "sketch"), None)
                    if victim is None and kind == "eval":
                        victim = 0
                if victim is None:
                    self._stats.dropped += 1
                    return False
                del self._pending[victim]
                if victim < self._send_idx:
                    self._send_idx -= 1
                self._stats.dropped += 1
            self._pending.append(_Upload(step, kind, msg))
            self._last_step = step
            self._stats.enqueued += 1
            self._cv.notify_all()
            return True

    def flush(self, timeout: float) -> bool:
        """Blocks up to ``timeout`` seconds until every queued upload is acked.
        True when the queue is empty."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._pending or self._error is not None
                                     or self._ended, timeout) and not self._pending

    # ------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        """True while a stream is open and welcomed."""
        with self._cv:
            return self._welcomed != 0 and self._welcomed == self._conn

    @property
    def ended(self) -> bool:
        """True once the server ended the run (finished or deleted)."""
        return self._ended

    @property
    def error(self) -> Optional[SpotterError]:
        """A permanent error that stopped the session (it keeps answering
        directive_at from what it has), or None."""
        return self._error

    @property
    def info(self):
        """The RunInfo of the last successful OpenRun (effective config), or None."""
        return self._info

    def stats(self) -> SessionStats:
        """A snapshot of the counters."""
        with self._cv:
            s = dataclasses.replace(self._stats, rejected=dict(self._stats.rejected))
            s.queued = len(self._pending)
            s.connected = self._welcomed != 0 and self._welcomed == self._conn
            return s

    # ------------------------------------------------------------------ close
    def close(self, timeout: float = 5.0, flush: bool = True) -> None:
        """Stops uploads, waits up to ``timeout`` seconds for the queue to be
        acked (when ``flush``; also while reconnecting), sends a last
        Heartbeat, half-closes the stream and joins the background thread.
        Idempotent."""
        deadline = time.monotonic() + timeout
        with self._cv:
            if self._closed:
                return
            self._closing = True
            self._cv.notify_all()
        if flush:
            self.flush(max(0.0, deadline - time.monotonic()))
        with self._cv:
            self._half_close = True
            self._cv.notify_all()
        self._thread.join(max(0.05, deadline - time.monotonic()))
        if self._thread.is_alive():
            with self._cv:
                call = self._call
            if call is not None:
                call.cancel()
            self._thread.join(2.0)
        self._channel.close()
        with self._cv:
            self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ background
    def _open(self, timeout: float) -> None:
        try:
            resp = self._stub.OpenRun(pb.OpenRunRequest(name=self.run, config=self.config),
                                      timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise SpotterError("OpenRun", e.code(), e.details()) from None
        with self._cv:
            if resp.created and self._ever_opened:
                # The server lost the run (restart without persistence): its
                # directive versions start again at 1.
                self._generation += 1
                self._last_version = 0
                log.warning("spotter: run %s was re-created by the server; its directives "
                            "restart (generation %d)", self.run, self._generation)
            self._opened = self._ever_opened = True
            self._info = resp.run

    def _wait(self, seconds: float) -> bool:
        """Sleeps up to ``seconds``; True if the session is closing."""
        with self._cv:
            return self._cv.wait_for(lambda: self._half_close, seconds)

    def _loop(self) -> None:
        backoff = self._backoff[0]
        first = True
        while True:
            with self._cv:
                if self._half_close or self._error is not None or self._ended:
                    break
            if not self._opened:
                try:
                    self._open(self._open_timeout)
                except SpotterError as e:
                    self._note_error(e)
                    if e.code in PERMANENT_CODES:
                        self._fail(e)
                        break
                    if self._wait(backoff * random.uniform(0.8, 1.2)):
                        break
                    backoff = min(backoff * 2, self._backoff[1])
                    continue
            with self._cv:
                self._conn += 1
                conn = self._conn
                self._stats.connects += 1
                if not first:
                    self._stats.reconnects += 1
                first = False
            welcomed = False
            try:
                call = self._stub.Connect(self._requests(conn), metadata=self._metadata)
                with self._cv:
                    self._call = call
                for resp in call:
                    welcomed |= self._handle(conn, resp)
                # The stream ended cleanly: either we half-closed it, or the
                # server ended the run.
                with self._cv:
                    if not self._half_close:
                        self._ended = True
                        log.info("spotter: run %s ended on the server", self.run)
            except grpc.RpcError as e:
                code = e.code()
                with self._cv:
                    closing = self._half_close
                if not (closing and code == grpc.StatusCode.CANCELLED):
                    err = SpotterError("Connect", code, e.details())
                    self._note_error(err)
                    if code == grpc.StatusCode.NOT_FOUND:
                        self._opened = False
                    elif code in PERMANENT_CODES:
                        self._fail(err)
            finally:
                with self._cv:
                    self._conn_done(conn)
            if welcomed:
                backoff = self._backoff[0]
            if self._wait(backoff * random.uniform(0.8, 1.2)):
                break
            backoff = min(backoff * 2, self._backoff[1])
        with self._cv:
            self._conn += 1  # ends any request iterator still running
            self._cv.notify_all()

    def _conn_done(self, conn: int) -> None:
        if self._conn == conn:
            self._conn += 1
        self._call = None
        self._cv.notify_all()

    def _note_error(self, e: SpotterError) -> None:
        with self._cv:
            first = self._stats.last_error != str(e)
            self._stats.last_error = str(e)
        if first:
            log.warning("spotter: %s (fail-open: training continues under the last directive)", e)

    def _fail(self, e: SpotterError) -> None:
        log.error("spotter: giving up on run %s: %s", self.run, e)
        with self._cv:
            self._error = e
            self._cv.notify_all()

    def _requests(self, conn: int):
        """The request iterator of stream ``conn`` (run by gRPC's thread)."""
        with self._cv:
            hello = pb.ConnectRequest()
            h = hello.hello
            h.run = self.run
            h.rank = self.rank
            h.projection.CopyFrom(self.projection)
            h.last_directive_version = self._last_version
            h.client = self._client_name
            h.incarnation = self.incarnation
        yield hello
        deadline = time.monotonic() + self._welcome_timeout
        with self._cv:
            ok = self._cv.wait_for(lambda: self._welcomed == conn or self._conn != conn
                                   or self._half_close, self._welcome_timeout)
            if not ok or self._conn != conn or self._welcomed != conn:
                if time.monotonic() >= deadline and self._call is not None:
                    self._call.cancel()
                return
        last_sent = time.monotonic()
        last = False
        while not last:
            with self._cv:
                msg = None
                while msg is None:
                    if self._conn != conn:
                        return
                    if self._send_idx < len(self._pending):
                        u = self._pending[self._send_idx]
                        self._send_idx += 1
                        if u.seq == 0:
                            u.seq = self._next_seq
                            self._next_seq += 1
                            getattr(u.request, u.kind).seq = u.seq
                        else:
                            self._stats.replayed += 1
                        self._stats.sent += 1
                        msg = u.request
                        break
                    idle = time.monotonic() - last_sent
                    if self._half_close or idle >= self._heartbeat_interval:
                        # On close, the last word: where this rank stopped.
                        last = self._half_close
                        msg = pb.ConnectRequest()
                        msg.heartbeat.step = max(self._step, self._last_step, 0)
                        self._stats.heartbeats += 1
                        break
                    self._cv.wait(self._heartbeat_interval - idle)
            last_sent = time.monotonic()
            yield msg

    def _handle(self, conn: int, resp) -> bool:
        """Applies one server message; True if it was the Welcome."""
        which = resp.WhichOneof("msg")
        callback = None
        with self._cv:
            if which == "welcome":
                w = resp.welcome
                self._welcome = w
                if not self._welcomed_once:
                    self._welcomed_once = True
                    self._next_seq = max(self._next_seq, w.last_seq + 1)
                self._stats.acked_seq = max(self._stats.acked_seq, w.last_seq)
                while self._pending and 0 < self._pending[0].seq <= w.last_seq:
                    self._pending.popleft()
                    self._stats.acked += 1
                self._send_idx = 0
                self._welcomed = conn
                self._cv.notify_all()
                return True
            if which == "ack":
                n = 0
                self._stats.acked_seq = max(self._stats.acked_seq, resp.ack.seq)
                while self._pending and 0 < self._pending[0].seq <= resp.ack.seq:
                    self._pending.popleft()
                    n += 1
                self._send_idx = max(0, self._send_idx - n)
                self._stats.acked += n
                if n:
                    self._cv.notify_all()
            elif which == "reject":
                r = resp.reject
                name = pb.RejectReason.Name(r.reason) if r.reason in pb.RejectReason.values() \
                    else str(r.reason)
                name = name.replace("REJECT_REASON_", "").lower()
                first = name not in self._stats.rejected
                self._stats.rejects += 1
                self._stats.rejected[name] = self._stats.rejected.get(name, 0) + 1
                self._stats.last_reject = r.message
                if first:
                    log.warning("spotter: upload seq %d rejected (%s): %s", r.seq, name, r.message)
            elif which == "directive":
                d = Directive.from_proto(resp.directive, self._generation)
                known = any(x.key == d.key for x in self._directives + self._advice)
                if not known:
                    (self._advice if d.advisory else self._directives).append(d)
                    self._last_version = max(self._last_version, d.version)
                    self._stats.directives += 1
                    self._cv.notify_all()
                    callback = (self._on_directive, d)
                    log.info("spotter: directive v%d (%s%s) from step %d: %s", d.version, d.phase,
                             ", advisory" if d.advisory else "", d.effective_step, d.reason)
            elif which == "diagnostics":
                self._latest_diagnostics = resp.diagnostics
                self._stats.diagnostics += 1
                callback = (self._on_diagnostics, resp.diagnostics)
        if callback and callback[0] is not None:
            try:
                callback[0](callback[1])
            except Exception:  # a callback must not kill the session
                log.exception("spotter: callback failed")
        return False
