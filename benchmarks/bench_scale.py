"""Full LIP on a many-class head: the refit (SVD included) vs one forward pass of the head.

One run, one process, on the same data: a ``q x l`` float32 head (default 4096 x 32,000, a
rank-64 signal with a decaying spectrum plus noise, the shape of a trained classifier's spectrum),
``n`` calibration rows of float32 features (default 20,000, batches of 2,048) and integer labels
(the head's own predictions with 30 % of them replaced by random classes).

Measured, each once (the machine is shared; run it when it is quiet):

1. ``forward``: the head's forward pass over the ``n`` rows, ``X_b @ W + b`` batch by batch;
2. ``fixed``: ``lip_agnostic.refine_batches(W, batches, rank=k, bias=b)`` end to end (its one
   reduced SVD included; the SVD's own time is recorded by wrapping ``reduced_svd``);
3. ``auto``: the same with ``rank="auto"``, ``tail="diagonal"`` (the paper's refit; every 5th row held out and every candidate rank scored
   on it: 256 candidates, a second pass), SVD included;
4. ``x_ut``: the per-batch product ``X_b @ U_t`` alone (``U_t`` the ``m - k`` tail vectors), over the
   same batches, against ``forward``;
5. accuracy probes of the SVD at this size (no LAPACK SVD: it does not finish here): for random
   vectors ``z``, ``||W z - U s V^T z|| / ||W z||`` and ``||V^T V z - z|| / ||z||``, ``U`` likewise.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py [--q 4096 --l 32000 --n 20000 --k 64]

Prints one JSON object (and writes it to ``benchmarks/_work/scale.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import lip_agnostic as lip  # noqa: E402
import lip_agnostic.repairs.base as _acc_mod  # noqa: E402  (where the repairs factorize the weight)


class _SkipFixed(Exception):
    pass


def make_head(q: int, l: int, rank: int, noise: float, rng) -> tuple[np.ndarray, np.ndarray]:
    left = rng.standard_normal((q, rank), dtype=np.float32) * (np.geomspace(1.0, 0.05, rank).astype(np.float32))
    W = np.empty((q, l), dtype=np.float32)
    right = rng.standard_normal((rank, l), dtype=np.float32) / np.sqrt(q)
    for start in range(0, q, 512):
        stop = min(start + 512, q)
        W[start:stop] = left[start:stop] @ right + noise / np.sqrt(q) * rng.standard_normal((stop - start, l), dtype=np.float32)
    b = (0.1 * rng.standard_normal(l)).astype(np.float32)
    return W, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--q", type=int, default=4096)
    ap.add_argument("--l", type=int, default=32000)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--skip-auto", action="store_true")
    ap.add_argument("--skip-fixed", action="store_true", help="forward and rank='auto' only (steps 2, 4, 5 skipped)")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    warm = rng.standard_normal((130, 120)).astype(np.float32)   # imports and first calls, off the clock
    lip.refine_batches(warm, [(warm.T[:64], np.arange(64) % 120)], rank=4)
    out: dict = {"shape": [a.q, a.l], "n": a.n, "k": a.k, "batch": a.batch, "dtype": "float32",
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
                 "cpu_count": os.cpu_count(), "numpy": np.__version__, "python": platform.python_version(),
                 "load_average_start": list(os.getloadavg())}
    t = time.perf_counter()
    W, b = make_head(a.q, a.l, 64, 0.3, rng)
    X = np.maximum(rng.standard_normal((a.n, a.q), dtype=np.float32), 0.0)
    out["generate_s"] = time.perf_counter() - t
    print(f"generated in {out['generate_s']:.1f} s", flush=True)

    # 1. forward pass of the head (timed: the products and the bias only; labels made off the clock)
    y = np.empty(a.n, dtype=np.int64)
    fwd = 0.0
    for start in range(0, a.n, a.batch):
        xb = X[start:start + a.batch]
        t = time.perf_counter()
        Z = xb @ W + b
        fwd += time.perf_counter() - t
        y[start:start + a.batch] = np.argmax(Z, axis=1)
        del Z
    flip = rng.random(a.n) < 0.3
    y[flip] = rng.integers(0, a.l, int(flip.sum()))
    out["forward_s"] = fwd
    print(f"forward: {fwd:.1f} s", flush=True)

    batches = [(X[s:s + a.batch], y[s:s + a.batch]) for s in range(0, a.n, a.batch)]
    svd_log: list[dict] = []
    original = _acc_mod.reduced_svd

    def timed_svd(Wx, **kw):
        t0 = time.perf_counter()
        f = original(Wx, **kw)
        svd_log.append({"seconds": time.perf_counter() - t0, "method": f.method, "factors": f})
        return f

    _acc_mod.reduced_svd = timed_svd
    try:
        # 2. fixed k, end to end
        if a.skip_fixed:
            raise _SkipFixed
        t = time.perf_counter()
        res = lip.refine_batches(W, batches, rank=a.k, bias=b)
        out["fixed_s"] = time.perf_counter() - t
        f = svd_log[-1]["factors"]
        out["fixed_svd_s"] = svd_log[-1]["seconds"]
        out["svd_method"] = svd_log[-1]["method"]
        out["fixed_rest_s"] = out["fixed_s"] - out["fixed_svd_s"]
        out["fixed_relative_change"] = res.summary.relative_change
        print(f"fixed k={a.k}: {out['fixed_s']:.1f} s (SVD {out['fixed_svd_s']:.1f} s, {out['svd_method']})", flush=True)

        # 4. X_b @ U_t alone over the same batches
        U_t = np.ascontiguousarray(f.U[:, a.k:])
        t = time.perf_counter()
        for xb, _ in batches:
            _ = xb @ U_t
        out["x_ut_s"] = time.perf_counter() - t
        out["x_ut_vs_forward"] = out["x_ut_s"] / fwd
        print(f"X @ U_t: {out['x_ut_s']:.1f} s ({out['x_ut_vs_forward']:.2f}x forward)", flush=True)

        # 5. accuracy probes of the factors
        probes = rng.standard_normal((a.l, 8)).astype(np.float64)
        Wz = W.astype(np.float64) @ probes
        rec = (f.U.astype(np.float64) * f.s.astype(np.float64)) @ (f.V.astype(np.float64).T @ probes)
        out["probe_reconstruction"] = float(np.linalg.norm(rec - Wz) / np.linalg.norm(Wz))
        zm = rng.standard_normal((f.rank_max, 8))
        V64, U64 = f.V.astype(np.float64), f.U.astype(np.float64)
        out["probe_orth_V"] = float(np.linalg.norm(V64.T @ (V64 @ zm) - zm) / np.linalg.norm(zm))
        out["probe_orth_U"] = float(np.linalg.norm(U64.T @ (U64 @ zm) - zm) / np.linalg.norm(zm))
        out["s_max"], out["s_min"] = float(f.s[0]), float(f.s[-1])
        del V64, U64, f, U_t
        svd_log.clear()
        print(f"probes: {out['probe_reconstruction']:.2e} {out['probe_orth_V']:.2e} {out['probe_orth_U']:.2e}", flush=True)
    except _SkipFixed:
        pass
    try:
        # 3. rank="auto", end to end
        if not a.skip_auto:
            t = time.perf_counter()
            res = lip.refine_batches(W, batches, rank="auto", bias=b, tail="diagonal")  # the paper's LIP, as reported
            out["auto_s"] = time.perf_counter() - t
            out["auto_svd_s"] = svd_log[-1]["seconds"]
            out["auto_rest_s"] = out["auto_s"] - out["auto_svd_s"]
            out["auto_k"] = res.selection.k
            out["auto_candidates"] = len(res.selection.ks)
            out["auto_n_val"] = res.selection.n_val
            print(f"auto: {out['auto_s']:.1f} s (SVD {out['auto_svd_s']:.1f} s), k={out['auto_k']}", flush=True)
    finally:
        _acc_mod.reduced_svd = original
    if "fixed_s" in out:
        out["fixed_vs_forward"] = out["fixed_s"] / fwd
    if "auto_s" in out:
        out["auto_vs_forward"] = out["auto_s"] / fwd
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["load_average_end"] = list(os.getloadavg())
    os.makedirs(os.path.join(HERE, "_work"), exist_ok=True)
    with open(os.path.join(HERE, "_work", "scale_auto.json" if a.skip_fixed else "scale.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
