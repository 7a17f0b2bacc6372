"""The wire encodings of sketch rows (SketchBatch.data): row-major,
little-endian float32, float16 or bfloat16 (docs/PROJECTION.md)."""
import numpy as np

from spotter._proto import pb

#: Encoding name -> the SketchBatch.encoding enum value.
ENCODINGS = {"float32": pb.ENCODING_FLOAT32, "float16": pb.ENCODING_FLOAT16,
              "bfloat16": pb.ENCODING_BFLOAT16}


def encode_rows(rows: np.ndarray, encoding: str = "float32") -> bytes:
    """Row-major little-endian bytes of ``rows`` in ``encoding`` ("float32",
    "float16", or "bfloat16": the upper half of binary32, rounded to nearest
    even)."""
    a = np.ascontiguousarray(rows, dtype="<f4")
    if encoding == "float32":
        return a.tobytes()
    if encoding == "float16":
        return a.astype("<f2").tobytes()
    if encoding == "bfloat16":
        u = a.view("<u4").astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return u.astype("<u2").tobytes()
    raise ValueError(f"encoding {encoding!r}: expected one of {sorted(ENCODINGS)}")
