"""`pip install --no-build-isolation ./client/python` works offline with the
system interpreter: the PEP 517 build from pyproject.toml with Debian's
setuptools (an isolated build would download setuptools), into a fresh virtual
environment that sees Debian's site packages (Debian's Python refuses pip
installs into the system itself, PEP 668), from a copy of the source so that
the in-tree build leaves nothing in the repository. The installed version is
the repository's VERSION."""
import os
import shutil
import subprocess
import sys

from conftest import REPO


def test_pip_install_offline(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "client", "python"), src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = dict(os.environ, SPOTTER_PROTO_ROOT=os.path.join(REPO, "proto"), PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)  # only the installed package may be found
    r = subprocess.run([py, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                        "--no-deps", str(src)],
                       env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    code = ("import importlib.metadata as md, spotter, spotter.torch, "
            "spotter.v1.spotter_pb2 as pb, spotter.grpc_health.v1.health_pb2 as h; "
            "assert h.DESCRIPTOR.package == 'grpc.health.v1'; "
            "assert pb.DESCRIPTOR.package == 'spotter.v1'; "
            "print(spotter.__file__); print(md.version('spotter')); "
            "print(md.metadata('spotter')['License'])")
    r = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    where, installed, license_ = r.stdout.splitlines()[-3:]
    assert where.startswith(str(venv)), where
    with open(os.path.join(REPO, "VERSION"), encoding="utf-8") as f:
        assert installed == f.read().strip()
    assert license_ == "Apache-2.0"
