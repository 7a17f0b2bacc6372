"""A run moved to another replica while a Python session streams to it
through the nginx gateway (docs/SCALING.md, "Moving runs"): the session sees
UNAVAILABLE from the frozen source, keeps its uploads queued, reconnects
once the gateway routes the run to its new owner, and nothing it sent is
lost or applied twice there. The C++ session is exercised the same way by
tests/e2e/gateway.sh.
"""
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from conftest import REPO, spotterd_path
from spotter import Client, RunSession
from spotter.testing import Spotterd

K = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spotterctl():
    path = os.environ.get("SPOTTERCTL") or os.path.join(
        os.path.dirname(os.path.dirname(spotterd_path())), "client", "cpp", "spotterctl")
    assert os.path.exists(path), f"spotterctl not found at {path} (set SPOTTERCTL)"
    return path


class Gateway:
    """nginx with deploy/nginx/spotter-gateway.conf, routing to one replica."""

    def __init__(self, workdir, upstream):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.target = f"127.0.0.1:{free_port()}"
        self._render(upstream)
        self._log = open(os.path.join(workdir, "nginx.log"), "w")
        self.proc = subprocess.Popen(
            ["nginx", "-c", self.conf, "-p", workdir, "-g", "daemon off;"], stderr=self._log)
        host, port = self.target.split(":")
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, "nginx exited"
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)

    def _render(self, upstream):
        template = open(os.path.join(REPO, "deploy", "nginx", "spotter-gateway.conf")).read()
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(template.replace("@LISTEN@", self.target).replace("@PREFIX@", self.dir)
                    .replace("@REPLICAS@", f"server {upstream} max_fails=0;"))

    def route_to(self, upstream):
        """Re-renders for `upstream` and reloads (new connections use it)."""
        self._render(upstream)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


def test_a_streaming_session_follows_its_run_to_the_new_replica(tmp_path):
    if shutil.which("nginx") is None:
        pytest.fail("nginx missing (scripts/debian-packages.txt)")
    a = Spotterd(spotterd_path(), workdir=str(tmp_path), args=[
        "--require_run_header", f"--state_file={tmp_path}/a.db", "--replica_id=a"])
    b = Spotterd(spotterd_path(), workdir=str(tmp_path), args=[
        "--require_run_header", f"--state_file={tmp_path}/b.db", "--replica_id=b"])
    gw = Gateway(str(tmp_path / "gw"), a.target)
    try:
        rng = np.random.default_rng(3)
        config = {"total_steps": 1000, "peak_lr": 0.1, "sketch_dim": K, "sketch_rows": 8,
                  "eval_every": 5}
        with RunSession(gw.target, "moving", config, backoff_max=0.5) as s:
            for step in range(20):
                assert s.upload_sketch(step, rng.standard_normal((4, K)).astype(np.float32),
                                       loss=1.0)
            assert s.flush(10.0)
            moved = subprocess.run([spotterctl(), "move", "moving", "--from", a.target,
                                    "--to", b.target], capture_output=True, text=True)
            assert moved.returncode == 0, moved.stderr
            # These reach the frozen source (UNAVAILABLE) and wait in the queue.
            for step in range(20, 40):
                assert s.upload_sketch(step, rng.standard_normal((4, K)).astype(np.float32),
                                       loss=1.0)
            time.sleep(0.5)
            assert s.stats().acked_seq == 20, "the frozen source acknowledged an upload"
            gw.route_to(b.target)
            assert s.flush(30.0), "the queued uploads never reached the new owner"
            stats = s.stats()
        assert stats.rejects == 0 and stats.dropped == 0, stats
        assert stats.reconnects >= 1, stats
        assert stats.acked_seq == 40, stats
        with Client(b.target) as c:
            rank = c.get_run("moving").ranks[0]
            assert rank.last_seq == 40 and rank.uploads == 40, rank
        with Client(a.target) as c:
            assert c.get_run("moving").moved_to == b.target
    finally:
        gw.stop()
        a.stop()
        b.stop()
