"""Starting a real spotterd for tests, examples and benchmarks.

Spotterd(binary) starts the binary on 127.0.0.1 port 0 with a port file, waits
until it has written its ports, and exposes ``target`` ("127.0.0.1:<port>").
stop() sends SIGTERM (graceful), kill() SIGKILL (a crash). Not thread-safe.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from typing import List, Optional


class Spotterd:
    """A spotterd child process. Raises RuntimeError if it does not start
    within ``start_timeout`` seconds (its stderr is in the message)."""

    def __init__(self, binary: str, args: Optional[List[str]] = None, workdir: Optional[str] = None,
                 start_timeout: float = 20.0, listen: str = "127.0.0.1:0"):
        self.binary = binary
        self.workdir = workdir or tempfile.mkdtemp(prefix="spotterd-")
        self._port_file = os.path.join(self.workdir, f"ports-{os.getpid()}-{time.monotonic_ns()}")
        self._log_path = self._port_file + ".log"
        self._log = open(self._log_path, "wb")
        cmd = [binary, f"--listen={listen}", "--metrics_listen=127.0.0.1:0",
               f"--port_file={self._port_file}", *(args or [])]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + start_timeout
        self.port = self.metrics_port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if os.path.exists(self._port_file):
                ports = dict(line.split("=", 1) for line in open(self._port_file).read().split())
                self.port, self.metrics_port = int(ports["grpc"]), int(ports["metrics"])
                break
            time.sleep(0.02)
        if self.port is None:
            self.kill()
            raise RuntimeError(f"spotterd did not start: {self.log()}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the server printed so far."""
        self._log.flush()
        with open(self._log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the server dies without a goodbye, as in a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
