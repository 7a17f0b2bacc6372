"""Build step of the `spotter` package; its metadata is in pyproject.toml.

Only the cmdclass lives here: build_py also generates the protobuf/gRPC stubs
(tools/gen_stubs.py with protoc and grpc_python_plugin) from the repository's
proto/ folder, two levels up, or from $SPOTTER_PROTO_ROOT.

Offline install (docs/PYTHON.md, "Install"):
  python -m pip install --no-build-isolation --no-index --no-deps ./client/python
"""
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "tools"))


class BuildPyWithStubs(build_py):
    """build_py, then generate the stubs into the build folder."""

    def run(self):
        super().run()
        import gen_stubs
        root = os.environ.get("SPOTTER_PROTO_ROOT") or os.path.join(HERE, "..", "..", "proto")
        gen_stubs.generate(os.path.abspath(root), self.build_lib)


setup(cmdclass={"build_py": BuildPyWithStubs})
