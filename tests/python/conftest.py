"""Shared fixtures of the Python tests: a real spotterd on port 0.

Environment (set by client/python/CMakeLists.txt for ctest):
  PYTHONPATH        <build>/client/python/site (the package with its stubs)
  SPOTTERD          the spotterd binary
  SPOTTER_TEST_DATA tests/data of the repository
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


def spotterd_path():
    path = os.environ.get("SPOTTERD")
    if not path:
        for cand in ("build-py", "build"):
            p = os.path.join(REPO, cand, "server", "spotterd")
            if os.path.exists(p):
                return p
        raise RuntimeError("set SPOTTERD to the spotterd binary (ctest does)")
    return path


@pytest.fixture
def spotterd(tmp_path):
    """A fresh spotterd on 127.0.0.1:0; yields the spotter.testing.Spotterd."""
    from spotter.testing import Spotterd
    server = Spotterd(spotterd_path(), workdir=str(tmp_path))
    try:
        yield server
    finally:
        server.stop()
