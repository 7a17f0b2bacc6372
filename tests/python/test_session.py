"""RunSession against an in-process fake server (exact control over acks,
broken streams and directives) and against an unreachable address."""
import socket
import threading
import time

import grpc
import numpy as np
import pytest

import fake_server
from spotter import RunSession, SpotterError
from spotter._proto import pb

CONFIG = dict(total_steps=1000, peak_lr=0.1, sketch_dim=4)
ROWS = np.ones((2, 4), dtype=np.float32)


def wait_until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def fake():
    server, f, target = fake_server.start()
    f.target = target
    yield f
    server.stop(0)


def dead_target():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"127.0.0.1:{port}"


def directive(version, eff, lr, advisory=False, stop=False):
    d = pb.Directive(version=version, effective_step=eff, phase=pb.PHASE_ACQUISITION,
                     advisory=advisory, stop=stop)
    d.lr.kind = pb.LrSchedule.KIND_CONSTANT
    d.lr.start_lr = lr
    return pb.ConnectResponse(directive=d)


def test_uploads_never_block_and_drop_oldest_when_full():
    s = RunSession(dead_target(), "r", open_timeout=0.2, queue_size=4, backoff_max=0.2, **CONFIG)
    try:
        t0 = time.monotonic()
        results = [s.upload_sketch(i, ROWS) for i in range(10)]
        elapsed = time.monotonic() - t0
        st = s.stats()
        assert results == [True] * 10
        assert (st.enqueued, st.dropped, st.queued) == (10, 6, 4)
        # The newest four survive; never sent, they have no seq yet.
        assert [(u.step, u.seq) for u in s._pending] == [(6, 0), (7, 0), (8, 0), (9, 0)]
        assert elapsed < 5.0  # no network wait (an OpenRun deadline would be 10 s)
        assert s.directive_at(5) is None and s.lr_at(5) is None  # fail-open: no directive
        assert s.lr_at(5, 0.3) == 0.3 and not s.should_stop(5)
        assert not s.connected
    finally:
        s.close(timeout=1.0)


def test_drop_newest_keeps_evals_and_refuses_sketches():
    s = RunSession(dead_target(), "r", open_timeout=0.2, queue_size=2, drop="newest",
                   backoff_max=0.2, **CONFIG)
    try:
        assert s.upload_sketch(0, ROWS) and s.report_eval(3, {"val_loss": 1.0})
        with pytest.raises(ValueError):
            s.upload_sketch(2, ROWS)  # step went backwards
        assert not s.upload_sketch(4, ROWS)
        assert s.stats().dropped == 1
        assert not s.report_eval(5, {"val_loss": float("nan")})
        assert s.stats().dropped_invalid == 1
        with pytest.raises(ValueError):
            s.upload_sketch(5, np.ones(4))  # not 2-D
    finally:
        s.close(timeout=1.0)


def test_acks_empty_the_queue_and_close_flushes(fake):
    with RunSession(fake.target, "r", **CONFIG) as s:
        for i in range(20):
            assert s.upload_sketch(i, ROWS, loss=1.0)
            if i % 5 == 0:
                s.report_eval(i, {"val_loss": 0.5})
        assert s.flush(10)
        st = s.stats()
        assert st.acked == 24 and st.queued == 0 and st.connected
        assert (st.sent, st.acked_seq, st.connects, st.reconnects) == (24, 24, 1, 0)
    assert fake.applied[0] == list(range(1, 25))
    # close() ends with a heartbeat carrying the rank's last step.
    beats = [r.heartbeat.step for r in fake.streams[0] if r.WhichOneof("msg") == "heartbeat"]
    assert beats and beats[-1] == 19 and s.stats().heartbeats == len(beats)
    assert not s._thread.is_alive()
    s.close()  # idempotent


def test_reconnect_replays_unacked_uploads_after_welcome_last_seq(fake):
    fake.break_after = 5  # uploads 1-4 applied and acked, the 5th breaks the stream
    with RunSession(fake.target, "r", backoff_initial=0.05, **CONFIG) as s:
        assert wait_until(lambda: s.connected)
        for i in range(10):
            s.upload_sketch(i, ROWS)
        assert s.flush(10), s.stats()
        st = s.stats()
        assert st.reconnects >= 1 and st.replayed >= 1 and st.connects == st.reconnects + 1
    # Every upload applied exactly once and in order, although some were sent twice.
    assert fake.applied[0] == list(range(1, 11))
    second = [r.sketch.seq for r in fake.streams[1] if r.WhichOneof("msg") == "sketch"]
    assert second[0] == 5 and second == sorted(second)  # replay starts after last_seq = 4


def test_directive_mailbox_advice_and_hello_version(fake):
    seen = []
    with RunSession(fake.target, "r", on_directive=seen.append, backoff_initial=0.05, **CONFIG) as s:
        assert wait_until(lambda: s.connected)
        fake.push(directive(1, 0, 0.1))
        fake.push(directive(2, 50, 0.05))
        fake.push(directive(3, 60, 0.5, advisory=True))
        fake.push(directive(2, 50, 0.05))  # a duplicate is ignored
        assert wait_until(lambda: len(seen) == 3)
        assert s.wait_for_directive(1, version=3) and not s.wait_for_directive(0.05, version=4)
        assert s.lr_at(49) == 0.1 and s.lr_at(50) == 0.05 and s.lr_at(1000) == 0.05
        assert s.advice().version == 3 and s.directive_at(1000).version == 2
        assert s.latest_directive().version == 3 and s.stats().directives == 3
        # A new stream asks only for newer directives.
        fake.break_streams()
        assert wait_until(lambda: len(fake.hellos) == 2)
        assert fake.hellos[1].last_directive_version == 3
        assert s.lr_at(50) == 0.05  # kept across the reconnect


def test_run_end_stops_the_session(fake):
    with RunSession(fake.target, "r", **CONFIG) as s:
        assert wait_until(lambda: s.connected)
        fake.push(directive(1, 0, 0.1, stop=True))
        fake.end_run()
        assert wait_until(lambda: s.ended)
        assert s.directive_at(0).stop and s.should_stop(0)
        assert not s.upload_sketch(1, ROWS)
        assert s.stats().dropped_closed == 1


def test_config_errors_raise_at_construction(fake):
    fake.open_status = (grpc.StatusCode.FAILED_PRECONDITION, "other config")
    with pytest.raises(SpotterError) as e:
        RunSession(fake.target, "r", **CONFIG)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_unreachable_at_start_then_server_appears():
    # Fail-open start: the session retries OpenRun in the background.
    server = grpc.server(fake_server.futures.ThreadPoolExecutor(max_workers=4))
    f = fake_server.FakeSpotter()
    fake_server.pb_grpc.add_SpotterServiceServicer_to_server(f, server)
    target = dead_target()
    s = RunSession(target, "r", open_timeout=0.2, backoff_initial=0.05, backoff_max=0.2, **CONFIG)
    try:
        s.upload_sketch(0, ROWS)
        assert not s.connected and "UNAVAILABLE" in s.stats().last_error
        server.add_insecure_port(target)
        server.start()
        assert wait_until(lambda: s.connected, 15)
        assert s.flush(10) and f.applied[0] == [1]
    finally:
        s.close(timeout=1.0)
        server.stop(0)


def test_upload_from_many_threads_keeps_seq_unique(fake):
    with RunSession(fake.target, "r", queue_size=1000, **CONFIG) as s:
        lock = threading.Lock()
        step = [0]

        def worker():
            for _ in range(50):
                with lock:  # steps must not decrease: one step counter
                    step[0] += 1
                    s.upload_sketch(step[0], ROWS)

        ts = [threading.Thread(target=worker) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert s.flush(10)
    assert fake.applied[0] == list(range(1, 201))


def test_a_restarted_trainer_numbers_after_the_servers_last_seq(fake):
    # A new session of the same rank (a restarted trainer) continues from the
    # Welcome's last_seq: its uploads are applied, not taken for duplicates.
    for steps in (range(0, 3), range(3, 5)):
        with RunSession(fake.target, "r", **CONFIG) as s:
            for i in steps:
                assert s.upload_sketch(i, ROWS)
            assert s.flush(10)
    assert fake.applied[0] == [1, 2, 3, 4, 5]
    assert s.stats().acked_seq == 5


def test_evicting_a_sent_upload_leaves_a_gap_the_server_accepts(fake):
    fake.break_after = 1  # the first upload is sent, never acked; the stream breaks
    with RunSession(fake.target, "r", queue_size=2, backoff_initial=0.5, backoff_max=0.5,
                    **CONFIG) as s:
        assert wait_until(lambda: s.connected)
        assert s.upload_sketch(0, ROWS)  # seq 1, sent on the broken stream
        assert wait_until(lambda: not s.connected)
        assert s.upload_sketch(1, ROWS) and s.upload_sketch(2, ROWS)  # evicts seq 1
        assert s.flush(10), s.stats()
        st = s.stats()
        assert (st.enqueued, st.dropped, st.acked) == (3, 1, 2)
    assert fake.applied[0] == [2, 3]
