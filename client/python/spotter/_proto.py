"""The generated protobuf and gRPC modules, with a clear error when missing.

The stubs are generated at build time (CMake target `spotter_python`, or
`pip install ./client/python`) by tools/gen_stubs.py; they are not in the
source tree. Importing spotter from the source folder without generating
them raises ImportError naming the fix.
"""
try:
    from spotter.v1 import spotter_pb2 as pb  # noqa: F401
    from spotter.v1 import spotter_pb2_grpc as pb_grpc  # noqa: F401
    from spotter.grpc_health.v1 import health_pb2  # noqa: F401
    from spotter.grpc_health.v1 import health_pb2_grpc  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "spotter: the generated stubs (spotter.v1.spotter_pb2) are missing. Build the "
        "CMake target spotter_python and put <build>/client/python/site on PYTHONPATH, or "
        "install the package with `pip install ./client/python`. Cause: %s" % e) from e
