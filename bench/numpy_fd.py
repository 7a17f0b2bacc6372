#!/usr/bin/python3
"""NumPy peer of Spotter's pipeline: classic Frequent Directions + spectral summary.

The algorithm as its authors publish it (Liberty 2013; Ghashami, Liberty,
Phillips, Woodruff 2016, "Fast-FD"): a buffer B of 2l rows; incoming rows fill
its empty slots; when it is full, B = U diag(s) Vt (np.linalg.svd,
full_matrices=False), delta = s[l]**2 (0-based: the (l+1)-th squared singular
value, so that l rows survive, like Spotter's sketch of l rows) and
B <- sqrt(max(s**2 - delta, 0)) Vt, whose last rows are zero and become empty
slots again.

At every evaluation the spectral summary of the sketch: eigenvalues = s**2 of
the held rows (an SVD of the rows in use); the trace is the exact one, tracked
as a running sum of squared row norms (as Spotter does); r90 = smallest r whose
top-r eigenvalues reach 0.9 * trace (censored, null, if the sketch never
reaches it); PR = trace**2 / sum(eigenvalues**2).

Reads the raw little-endian float32 rows (rows x k) that spotter_alternatives
--write_rows writes; feeds them --batch rows per message, evaluates every
--eval_every messages and after the last. Single-threaded BLAS/LAPACK (the
thread variables are set before NumPy is imported). Appends are whole slices
(no Python loop per row); the Python loop runs per message.
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
           "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def blas_libraries():
    """The BLAS / LAPACK shared objects this process has loaded (by path)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                name = os.path.basename(path)
                if any(t in name for t in ("blas", "lapack", "mkl", "blis")):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs)


class FrequentDirections:
    """Classic FD sketch of rows of length k with l rows kept (2l-row buffer)."""

    def __init__(self, k, l, dtype, method="svd"):
        self.l = l
        self.method = method
        self.buf = np.zeros((2 * l, k), dtype=dtype)
        self.used = 0
        self.trace = 0.0  # exact: sum of squared row norms (float64)
        self.delta = 0.0  # accumulated shrinkage
        self.shrinks = 0

    def append(self, rows):
        rows = np.asarray(rows, dtype=self.buf.dtype)
        self.trace += float(np.einsum("ij,ij->", rows, rows, dtype=np.float64))
        cap = self.buf.shape[0]
        pos, n = 0, rows.shape[0]
        while pos < n:
            take = min(cap - self.used, n - pos)
            self.buf[self.used:self.used + take] = rows[pos:pos + take]
            self.used += take
            pos += take
            if self.used == cap:
                self._shrink()

    def _shrink(self):
        if self.method == "gram":
            self._shrink_gram()
            return
        l = self.l
        _, s, vt = np.linalg.svd(self.buf, full_matrices=False)
        d = s[l] ** 2
        self.delta += float(d)
        self.buf[:l] = np.sqrt(np.maximum(s[:l] ** 2 - d, 0.0))[:, None] * vt[:l]
        self.buf[l:] = 0.0
        self.used = l
        self.shrinks += 1

    def _shrink_gram(self):
        # Not the published form: the same shrink through the eigen-decomposition
        # of the 2l x 2l Gram matrix B B^T (Spotter's route), for comparison.
        l = self.l
        w, u = np.linalg.eigh(self.buf @ self.buf.T)
        w, u = w[::-1], u[:, ::-1]
        d = max(float(w[l]), 0.0)
        self.delta += d
        top = w[:l]
        scale = np.where(top > d, np.sqrt(np.maximum(top - d, 0.0) / np.maximum(top, 1e-300)), 0.0)
        self.buf[:l] = (u[:, :l] * scale).T @ self.buf
        self.buf[l:] = 0.0
        self.used = l
        self.shrinks += 1

    def eigenvalues(self):
        """Eigenvalues of B^T B (largest first): squared singular values of B."""
        if self.used == 0:
            return np.zeros(0)
        s = np.linalg.svd(self.buf[:self.used], compute_uv=False)
        return s.astype(np.float64) ** 2


def summarize(eig, trace, mass=0.9):
    """(r90 or None if the sketch cannot reach mass * trace, PR)."""
    if trace <= 0.0 or eig.size == 0:
        return None, float("nan")
    reached = np.nonzero(np.cumsum(eig) >= mass * trace)[0]
    r90 = int(reached[0]) + 1 if reached.size else None
    sq = float(np.dot(eig, eig))
    return r90, (trace * trace / sq if sq > 0.0 else float("nan"))


def main():
    ap = argparse.ArgumentParser(
        description="Classic Frequent Directions (2l-row buffer, one SVD per "
        "rotation) + spectral summary in NumPy, single-threaded: the peer of "
        "spotter_alternatives (bench/alternatives.sh).")
    ap.add_argument("--rows_file", required=True,
                    help="raw little-endian float32 rows, rows x k")
    ap.add_argument("--k", type=int, required=True, help="row length")
    ap.add_argument("--l", type=int, default=64, help="sketch rows kept (default 64)")
    ap.add_argument("--rows", type=int, default=0,
                    help="rows to feed (0: all the file holds)")
    ap.add_argument("--batch", type=int, default=64, help="rows per message (default 64)")
    ap.add_argument("--eval_every", type=int, default=10,
                    help="messages between evaluations (default 10)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                    help="sketch buffer precision (float32: Spotter's; default)")
    ap.add_argument("--method", choices=("svd", "gram"), default="svd",
                    help="svd: the published shrink (default); gram: eigh of the "
                    "2l x 2l Gram matrix instead (not the published form)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    a = ap.parse_args()

    data = np.fromfile(a.rows_file, dtype="<f4")
    if data.size % a.k:
        sys.exit(f"{a.rows_file}: {data.size} floats is not a whole number of {a.k}-float rows")
    data = data.reshape(-1, a.k)
    if a.rows > 0:
        data = data[:a.rows]
    data = np.ascontiguousarray(data, dtype=a.dtype)
    n = data.shape[0]

    fd = FrequentDirections(a.k, a.l, a.dtype, a.method)
    messages = (n + a.batch - 1) // a.batch
    evals, eval_total = 0, 0.0
    r90, pr = None, float("nan")
    t0, c0 = time.perf_counter(), time.thread_time()
    for msg in range(messages):
        fd.append(data[msg * a.batch:(msg + 1) * a.batch])
        if (msg + 1) % a.eval_every == 0 or msg + 1 == messages:
            e0 = time.perf_counter()
            r90, pr = summarize(fd.eigenvalues(), fd.trace)
            eval_total += time.perf_counter() - e0
            evals += 1
    seconds = time.perf_counter() - t0
    cpu = time.thread_time() - c0

    state = fd.buf.nbytes
    out = {
        "impl": "numpy_fd", "mode": "numpy", "dtype": a.dtype, "method": a.method, "k": a.k, "l": a.l,
        "rows": n, "batch": a.batch, "eval_every": a.eval_every, "evaluations": evals,
        "seconds": round(seconds, 6), "cpu_seconds": round(cpu, 6),
        "rows_per_s": round(n / seconds, 1), "rows_per_cpu_s": round(n / cpu, 1),
        "eval_seconds_total": round(eval_total, 6),
        "eval_seconds_mean": round(eval_total / evals, 6) if evals else 0.0,
        "peak_rss_or_state_bytes": state,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rows_bytes": data.nbytes, "stopped_early": False,
        "r90": r90, "r90_censored": r90 is None, "pr": pr,
        "shrinks": fd.shrinks, "numpy": np.__version__, "blas": blas_libraries(),
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"numpy FD ({a.method}, {a.dtype})  k {a.k}  l {a.l}  rows {n} "
              f"(batch {a.batch}, {evals} evaluations, {fd.shrinks} shrinks)")
        print(f"  {seconds:.3f} s wall ({cpu:.3f} s CPU): {n / seconds:.0f} rows/s")
        print(f"  evaluations: {eval_total:.4f} s total")
        print(f"  state {state} bytes; r90 {r90}  PR {pr:.4g}")
        print(f"  BLAS/LAPACK: {', '.join(out['blas']) or 'unknown'}")


if __name__ == "__main__":
    main()
