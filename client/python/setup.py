"""pip install ./client/python  (offline; Debian: python3-grpcio,
python3-protobuf, python3-numpy; python3-torch for spotter.torch).

The protobuf/gRPC stubs are generated while building (tools/gen_stubs.py with
protoc and grpc_python_plugin) from the repository's proto/ folder, two levels
up, or from $SPOTTER_PROTO_ROOT. No pyproject.toml on purpose: pip then builds
with the installed setuptools instead of fetching one into an isolated
environment, so the install works without a network.
"""
import os
import sys

from setuptools import find_packages, setup
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


setup(
    name="spotter",
    version="0.1.0",
    description="Client of spotterd, the training monitor: gradient sketches, directives, "
                "PyTorch integration",
    packages=find_packages(include=["spotter", "spotter.*"]),
    python_requires=">=3.9",
    install_requires=["grpcio", "protobuf", "numpy"],
    extras_require={"torch": ["torch"]},
    cmdclass={"build_py": BuildPyWithStubs},
)
