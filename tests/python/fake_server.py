"""An in-process fake SpotterService for RunSession tests: it records every
upload, acknowledges like spotterd (cumulative, dedupe by seq), can break a
stream after a given number of uploads without acknowledging them, and can
push directives or end the run on demand. Thread-safe (one lock)."""
import queue
import threading
from concurrent import futures

import grpc

from spotter._proto import pb, pb_grpc


class FakeSpotter(pb_grpc.SpotterServiceServicer):
    def __init__(self):
        self.mu = threading.Lock()
        self.applied = {}        # rank -> list of applied seqs, in order
        self.streams = []        # per stream: list of received ConnectRequests
        self.hellos = []
        self.break_after = None  # break the next stream after this many uploads (unacked)
        self.open_status = None  # (code, details) to fail OpenRun with
        self.outboxes = []       # per open stream: queue of ConnectResponses
        self.opened = 0

    # -- control -------------------------------------------------------------
    def push(self, response):
        with self.mu:
            for q in self.outboxes:
                q.put(response)

    def break_streams(self):
        """Aborts every open stream with UNAVAILABLE."""
        with self.mu:
            for q in self.outboxes:
                q.put("break")

    def end_run(self):
        with self.mu:
            for q in self.outboxes:
                q.put(None)

    def last_seq(self, rank):
        with self.mu:
            s = self.applied.get(rank, [])
            return s[-1] if s else 0

    # -- service -------------------------------------------------------------
    def OpenRun(self, request, context):
        if self.open_status:
            context.abort(*self.open_status)
        with self.mu:
            self.opened += 1
            created = self.opened == 1
        return pb.OpenRunResponse(run=pb.RunInfo(name=request.name, config=request.config),
                                  created=created)

    def Connect(self, request_iterator, context):
        first = next(request_iterator)
        assert first.WhichOneof("msg") == "hello"
        rank = first.hello.rank
        out = queue.Queue()
        got = []
        with self.mu:
            self.hellos.append(first.hello)
            self.streams.append(got)
            self.outboxes.append(out)
            applied = self.applied.setdefault(rank, [])
            limit, self.break_after = self.break_after, None
        out.put(pb.ConnectResponse(welcome=pb.Welcome(last_seq=applied[-1] if applied else 0)))

        def reader():
            n = 0
            try:
                for req in request_iterator:
                    with self.mu:
                        got.append(req)
                    which = req.WhichOneof("msg")
                    if which not in ("sketch", "eval"):
                        continue
                    seq = getattr(req, which).seq
                    n += 1
                    if limit is not None and n >= limit:
                        out.put("break")
                        return
                    with self.mu:
                        if not applied or seq > applied[-1]:
                            applied.append(seq)
                    out.put(pb.ConnectResponse(ack=pb.Ack(seq=seq)))
            except grpc.RpcError:
                pass
            out.put("eof")

        threading.Thread(target=reader, daemon=True).start()
        try:
            while True:
                r = out.get()
                if r == "break":
                    context.abort(grpc.StatusCode.UNAVAILABLE, "fake: stream broken")
                if r is None or r == "eof":
                    return
                yield r
        finally:
            with self.mu:
                self.outboxes.remove(out)


def start():
    """(server, fake, target) on 127.0.0.1:<free port>."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    fake = FakeSpotter()
    pb_grpc.add_SpotterServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, fake, f"127.0.0.1:{port}"
