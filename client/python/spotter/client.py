"""spotter.Client: the unary RPCs of spotter.v1.SpotterService, and run_config().

Thread-safe: a Client wraps one grpc.Channel, which may be shared by threads.
Every RPC has a deadline (``timeout`` seconds); errors surface as SpotterError
carrying the gRPC status code and the server's message.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import json_format

from spotter import env as _env
from spotter._proto import health_pb2, health_pb2_grpc, pb, pb_grpc

#: Channel options used by default: keepalive so that a dead server is noticed
#: on an idle stream, and the server's default message limit.
DEFAULT_CHANNEL_OPTIONS: Tuple[Tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
)


#: The metadata key naming the run of a run-scoped call, so a proxy can route
#: every call about one run to one spotterd replica (docs/SCALING.md); the
#: server refuses a call whose header and request name different runs.
RUN_HEADER = "x-spotter-run"


class SpotterError(Exception):
    """An RPC failed. ``code`` is the grpc.StatusCode, ``details`` the server's text."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str):
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


ConfigLike = Union["pb.RunConfig", Mapping]


def run_config(config: Optional[ConfigLike] = None, **fields) -> "pb.RunConfig":
    """Builds a spotter.v1.RunConfig from a RunConfig, a dict, and/or keyword
    fields (proto field names; nested messages as dicts; enums by name, e.g.
    ``mode="MODE_ADVISE"``, ``projection={"kind": "PROJECTION_KIND_GAUSSIAN"}``).
    Keyword fields are merged over ``config``. Raises ValueError on an unknown
    field or a bad value."""
    out = pb.RunConfig()
    try:
        if isinstance(config, pb.RunConfig):
            out.CopyFrom(config)
        elif config is not None:
            json_format.ParseDict(dict(config), out)
        if fields:
            extra = pb.RunConfig()
            json_format.ParseDict(fields, extra)
            out.MergeFrom(extra)
    except json_format.ParseError as e:
        raise ValueError(f"run_config: {e}") from e
    return out


def channel(target: str, *, root_certificates: Optional[bytes] = None,
            options: Sequence[Tuple[str, object]] = DEFAULT_CHANNEL_OPTIONS) -> grpc.Channel:
    """A channel to ``target`` ("host:port"): TLS when root_certificates (PEM)
    are given, else plaintext (spotterd without TLS listens on loopback only)."""
    if root_certificates is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.secure_channel(target, creds, options=list(options))
    return grpc.insecure_channel(target, options=list(options))


class Client:
    """Unary RPCs (and WatchRun) against one spotterd.

    Args:
      target: "host:port" of spotterd's gRPC listener; None: SPOTTER_SERVER,
        else 127.0.0.1:50051 (spotter.env).
      timeout: deadline of every unary RPC, seconds.
      token: bearer token sent as ``authorization: Bearer <token>``; None:
        SPOTTER_TOKEN if set; "": none.
      root_certificates: PEM bytes to use TLS; None for plaintext.
    Call close() when done (or use ``with Client(...) as c``).
    """

    def __init__(self, target: Optional[str] = None, *, timeout: float = 10.0,
                 token: Optional[str] = None, root_certificates: Optional[bytes] = None,
                 options: Sequence[Tuple[str, object]] = DEFAULT_CHANNEL_OPTIONS):
        self.target = target = _env.server(target)
        self.timeout = timeout
        token = _env.token(token)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = channel(target, root_certificates=root_certificates, options=options)
        self.stub = pb_grpc.SpotterServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # -- plumbing --------------------------------------------------------------
    def _call(self, method: str, request, timeout: Optional[float] = None):
        # A run-scoped request (it has a name) also carries the run header a
        # proxy routes on (RUN_HEADER).
        metadata = self.metadata
        if getattr(request, "name", ""):
            metadata = metadata + ((RUN_HEADER, request.name),)
        try:
            return getattr(self.stub, method)(
                request, timeout=self.timeout if timeout is None else timeout,
                metadata=metadata)
        except grpc.RpcError as e:
            raise SpotterError(method, e.code(), e.details()) from None

    def close(self) -> None:
        """Closes the channel; later calls fail. Idempotent."""
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- RPCs -----------------------------------------------------------------
    def open_run(self, name: str, config: Optional[ConfigLike] = None,
                 timeout: Optional[float] = None, **fields) -> "pb.OpenRunResponse":
        """Creates run ``name`` or joins it when its config equals this one.
        Returns OpenRunResponse (run: RunInfo with the effective config,
        created: bool). FAILED_PRECONDITION: same name, other config;
        INVALID_ARGUMENT: a value out of range."""
        req = pb.OpenRunRequest(name=name, config=run_config(config, **fields))
        return self._call("OpenRun", req, timeout)

    def get_run(self, name: str) -> "pb.RunInfo":
        """The run's RunInfo. NOT_FOUND if there is no such run."""
        return self._call("GetRun", pb.GetRunRequest(name=name)).run

    def list_runs(self, state: int = pb.RUN_STATE_UNSPECIFIED,
                  page_size: int = 0) -> Sequence["pb.RunSummary"]:
        """All runs (or those in ``state``), newest first: every page."""
        runs: list = []
        token = ""
        while True:
            page = self._call("ListRuns", pb.ListRunsRequest(state=state, page_size=page_size,
                                                             page_token=token))
            runs.extend(page.runs)
            token = page.next_page_token
            if not token:
                return runs

    def get_trajectory(self, name: str, since_step: int = 0, until_step: int = 0,
                       max_points: int = 0, page_size: int = 0) -> "pb.GetTrajectoryResponse":
        """Points with since_step <= step <= until_step (0: no bound), all
        transitions and directives: every page, merged. ``max_points`` >= 4
        asks for the range downsampled to at most that many points (per
        bucket of steps, the lowest and highest effective rank)."""
        points: list = []
        downsampled = False
        token = ""
        while True:
            page = self._call("GetTrajectory", pb.GetTrajectoryRequest(
                name=name, since_step=since_step, until_step=until_step, max_points=max_points,
                page_size=page_size, page_token=token))
            points.extend(page.points)
            downsampled = downsampled or page.downsampled
            token = page.next_page_token
            if not token:
                del page.points[:]
                page.points.extend(points)
                page.downsampled = downsampled
                return page

    def watch_run(self, name: str, include_history: bool = False,
                  timeout: Optional[float] = None) -> Iterator["pb.WatchRunResponse"]:
        """Iterates the run's live events until it ends (or ``timeout``
        seconds pass: then SpotterError DEADLINE_EXCEEDED). Cancel by
        closing the client."""
        try:
            for ev in self.stub.WatchRun(pb.WatchRunRequest(name=name, include_history=include_history),
                                         timeout=timeout,
                                         metadata=self.metadata + ((RUN_HEADER, name),)):
                yield ev
        except grpc.RpcError as e:
            raise SpotterError("WatchRun", e.code(), e.details()) from None

    def override_phase(self, name: str, action: Union[int, str], *, phase: Union[int, str, None] = None,
                       directive=None, hold: bool = False, reason: str = "",
                       effective_step: int = 0) -> "pb.OverridePhaseResponse":
        """Operator control. action: "force_phase", "pin_directive", "release"
        (or the enum). phase: "acquisition", "refinement", "polish", "done" (or
        the enum). directive: a spotter.v1.Directive or dict for pin_directive.
        effective_step: the step the directive takes effect at (0: the earliest
        every rank can get it; an earlier one is FAILED_PRECONDITION)."""
        if isinstance(action, str):
            action = pb.OverridePhaseRequest.Action.Value("ACTION_" + action.upper())
        req = pb.OverridePhaseRequest(name=name, action=action, hold=hold, reason=reason,
                                      effective_step=effective_step)
        if phase is not None:
            req.phase = pb.Phase.Value("PHASE_" + phase.upper()) if isinstance(phase, str) else phase
        if directive is not None:
            if isinstance(directive, Mapping):
                json_format.ParseDict(dict(directive), req.directive)
            else:
                req.directive.CopyFrom(directive)
        return self._call("OverridePhase", req)

    def finish_run(self, name: str, reason: str = "") -> "pb.RunInfo":
        """Marks the run finished (final stop directive, streams closed)."""
        return self._call("FinishRun", pb.FinishRunRequest(name=name, reason=reason)).run

    def delete_run(self, name: str) -> None:
        """Removes the run and its history."""
        self._call("DeleteRun", pb.DeleteRunRequest(name=name))

    def health(self, service: str = "", timeout: Optional[float] = None) -> str:
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... Raises
        SpotterError when the server cannot be reached."""
        try:
            r = self._health.Check(health_pb2.HealthCheckRequest(service=service),
                                   timeout=self.timeout if timeout is None else timeout,
                                   metadata=self.metadata)
        except grpc.RpcError as e:
            raise SpotterError("Health.Check", e.code(), e.details()) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
