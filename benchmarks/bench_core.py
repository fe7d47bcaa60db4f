"""Core benchmark: ``lip_refine`` vs the paper's dense reference formula vs the matmul floor.

One run measures, on the same data (n=200,000, q=512, l=100, float32, k=10 so r=90 tail
components), for NumPy and PyTorch (CPU):

- ``lip``: :func:`lip_agnostic.lip_refine` with a one-hot target matrix (and, for information,
  with integer labels, which gather rows of ``V_t`` instead of a matmul);
- ``reference``: the reference code's expression, evaluated as written:
  ``diag(U_t^T X^T (Y - X W_k) V_t) / diag(U_t^T X^T X U_t)``;
- ``floor``: the two products every exact method needs, ``X @ U_t`` and ``Y @ V_t``.

Time: interleaved repetitions (floor, lip, reference, ...), median of each. Peak memory: each
method runs in a fresh subprocess; the figure is the growth of the peak RSS over the RSS once the
inputs exist (so the inputs themselves are not counted).

Usage::

    python benchmarks/bench_core.py [--n 200000] [--repeats 5] [--write docs/BENCHMARKS.md]
    python benchmarks/bench_core.py --libs torch-cuda,cupy      # on a GPU (benchmarks/gpu_check.sh)

``--libs`` takes ``numpy``, ``torch`` (CPU), ``torch-cuda`` and ``cupy``. On a GPU every timed call
ends with a device synchronization, and the peak column is the device's peak allocation (torch:
``max_memory_allocated``; CuPy: the memory pool's peak is not tracked, so it reads n/a).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

Q, L, K = 512, 100, 10


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((Q, L), dtype=np.float32)
    X = rng.standard_normal((n, Q), dtype=np.float32)
    y = rng.integers(0, L, n)
    Y = np.zeros((n, L), dtype=np.float32)
    Y[np.arange(n), y] = 1.0
    return W, X, y, Y


def methods(lib: str):
    """name -> callable(W, X, y, Y) for one array library."""
    from lip_agnostic import lip_refine

    if lib == "cupy":
        import cupy

        def svd(W):
            U, s, Vh = cupy.linalg.svd(W, full_matrices=False)
            return U, s, Vh.T

        diag = cupy.diagonal
    elif lib.startswith("torch"):
        import torch

        def svd(W):
            U, s, Vh = torch.linalg.svd(W, full_matrices=False)
            return U, s, Vh.T

        def diag(M):
            return torch.diagonal(M)
    else:
        def svd(W):
            U, s, Vh = np.linalg.svd(W, full_matrices=False)
            return U, s, Vh.T

        diag = np.diagonal

    def reference(W, X, y, Y):
        U, s, V = svd(W)
        Wk = (U[:, :K] * s[:K]) @ V[:, :K].T
        Ut, Vt = U[:, K:], V[:, K:]
        num = diag(Ut.T @ X.T @ (Y - X @ Wk) @ Vt)
        den = diag(Ut.T @ X.T @ X @ Ut)
        return Wk + (Ut * (num / den)) @ Vt.T

    def floor(W, X, y, Y):
        U, s, V = svd(W)
        return X @ U[:, K:], Y @ V[:, K:]

    return {
        "floor": floor,
        "lip": lambda W, X, y, Y: lip_refine(W, X, Y, K),
        "lip_int_labels": lambda W, X, y, Y: lip_refine(W, X, y, K),
        "reference": reference,
    }


def to_lib(lib: str, arrays):
    if lib.startswith("torch"):
        import torch

        device = "cuda" if lib == "torch-cuda" else "cpu"
        return tuple(torch.from_numpy(a).to(device) for a in arrays)
    if lib == "cupy":
        import cupy

        return tuple(cupy.asarray(a) for a in arrays)
    return arrays


def synchronize(lib: str) -> None:
    """Wait for the device: GPU calls return before the work is done."""
    if lib == "torch-cuda":
        import torch

        torch.cuda.synchronize()
    elif lib == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def gpu_peak(lib: str, name: str, n: int):
    """Peak device allocation of one call above the inputs (bytes); None where it is not tracked."""
    if lib != "torch-cuda":
        return None
    import torch

    W, X, y, Y = to_lib(lib, make_data(n))
    fn = methods(lib)[name]
    fn(W, X[:2048], y[:2048], Y[:2048])
    synchronize(lib)
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn(W, X, y, Y)
    synchronize(lib)
    return max(0, torch.cuda.max_memory_allocated() - before)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_child(lib: str, name: str, n: int) -> None:
    """Child process: build inputs, run one method once, print the peak growth in bytes.

    Libraries are warmed up on a small slice first (their one-off initialisation is not the
    method's memory). Then the kernel's peak-RSS mark is reset (``5 > /proc/self/clear_refs``,
    Linux >= 4.0), so ``VmHWM - VmRSS(before)`` is what the method itself added on top of the
    inputs.
    """
    if lib.startswith("torch"):
        import torch  # noqa: F401  (imported before the baseline, like the data)
    W, X, y, Y = to_lib(lib, make_data(n))
    fn = methods(lib)[name]
    fn(W, X[:2048], y[:2048], Y[:2048])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    fn(W, X, y, Y)
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak": max(0, peak - before) * 1024}))


def measure_peak(lib: str, name: str, n: int) -> int:
    out = subprocess.run([sys.executable, __file__, "--peak-child", lib, name, "--n", str(n)],
                         capture_output=True, text=True, check=True, timeout=900)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak"])


def measure_time(lib: str, n: int, repeats: int) -> dict[str, float]:
    W, X, y, Y = to_lib(lib, make_data(n))
    fns = methods(lib)
    for fn in fns.values():  # warm-up
        fn(W, X, y, Y)
    synchronize(lib)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(W, X, y, Y)
            synchronize(lib)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def check_agreement(n: int) -> float:
    W, X, y, Y = make_data(min(n, 20000))
    f = methods("numpy")
    a = f["lip"](W, X, y, Y).astype(np.float64)
    b = f["reference"](W.astype(np.float64), X.astype(np.float64), y, Y.astype(np.float64))
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def report(results: dict, n: int, repeats: int) -> str:
    libs = [lib for lib in results if lib != "agreement"]
    gpu = [lib for lib in libs if lib in ("torch-cuda", "cupy")]
    lines = [
        (f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_core.py --n {n} --repeats {repeats} --write docs/BENCHMARKS.md` "
         if not gpu else f"Command: `python benchmarks/bench_core.py --libs {','.join(libs)} --n {n} --repeats {repeats}` ")
        + f"(n={n:,}, q={Q}, l={L}, k={K} so r={min(Q, L) - K}; float32; one-hot target matrix; "
        f"median of {repeats} interleaved runs; "
        + ("peak = growth of peak RSS over the inputs, fresh process; " if not gpu else
           "each timed call ends with a device synchronize; GPU peak = torch.cuda.max_memory_allocated growth over "
           "the inputs (n/a for CuPy); ")
        + f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}). "
        + ("Machine: 2 CPU cores shared with other jobs (one BLAS thread keeps OpenBLAS's spinning threads "
           "from turning contention into 100x outliers on the small SVD; ratios are what count)." if not gpu else
           "Machine: see env.txt of benchmarks/gpu_check.sh."),
        "",
        "| library | method | time (s) | time / floor | peak extra memory (MiB) | peak / reference |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for lib, r in results.items():
        t, p = r["time"], r["peak"]
        for name in ("floor", "lip", "lip_int_labels", "reference"):
            peak = "n/a" if p[name] is None else f"{p[name] / 2**20:.1f}"
            ratio = "n/a" if p[name] is None else f"{p[name] / max(p['reference'], 1):.3f}"
            lines.append(f"| {lib} | `{name}` | {t[name]:.3f} | {t[name] / t['floor']:.2f}x | {peak} | {ratio} |")
    lines.append("")
    lines.append("Targets: `lip` <= 1.3x the floor; >= 3x faster than and <= 0.25x the peak memory of the reference.")
    for lib, r in results.items():
        t, p = r["time"], r["peak"]
        mem = "n/a" if p["lip"] is None else f"{p['lip'] / max(p['reference'], 1):.3f}"
        lines.append(
            f"- {lib}: lip / floor = {t['lip'] / t['floor']:.2f}x; reference / lip = {t['reference'] / t['lip']:.2f}x "
            f"faster; lip peak / reference peak = {mem}."
        )
    lines.append(f"- Agreement of `lip` (float32) with the float64 reference: max relative difference "
                 f"{results['agreement']:.2e}." if "agreement" in results else "")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--libs", default="numpy,torch")
    ap.add_argument("--write", default=None, help="replace the core section of this Markdown report")
    ap.add_argument("--peak-child", nargs=2, metavar=("LIB", "METHOD"))
    args = ap.parse_args()
    if args.peak_child:
        peak_child(args.peak_child[0], args.peak_child[1], args.n)
        return
    results: dict = {}
    for lib in args.libs.split(","):
        if lib.startswith("torch"):
            import torch

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        t = measure_time(lib, args.n, args.repeats)
        peak = gpu_peak if lib in ("torch-cuda", "cupy") else measure_peak
        p = {name: peak(lib, name, args.n) for name in ("floor", "lip", "lip_int_labels", "reference")}
        results[lib] = {"time": t, "peak": p}
        print(lib, json.dumps(results[lib]), flush=True)
    agreement = check_agreement(args.n)
    text = report(results, args.n, args.repeats)
    text = text.replace("\n- Agreement", f"\n- Agreement of `lip` (float32) with the float64 reference on 20,000 rows: "
                        f"max relative difference {agreement:.2e}.\n- Agreement", 1) if False else text + (
        f"\n- Agreement of `lip` (float32) with the float64 reference (20,000 rows): max relative difference {agreement:.2e}.")
    print(text)
    if args.write:
        write_section(args.write, "## Core: `lip_refine`", text)


def write_section(path: str, heading: str, body: str) -> None:
    """Replace the body under ``heading`` (up to the next ``## ``) in a Markdown file."""
    with open(path) as f:
        doc = f.read()
    start = doc.index(heading) + len(heading)
    nxt = doc.find("\n## ", start)
    end = len(doc) if nxt < 0 else nxt
    doc = doc[:start] + "\n\n" + body.strip() + "\n" + doc[end:]
    with open(path, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
