"""Benchmark of ``lip-onnx denoise`` on a large model with external data.

Generates (under ``benchmarks/_work/onnx/``, deleted afterwards) an MLP
``x (1024) -> 4096 ReLU -> 32000 classes`` whose 4096 x 32000 classifier is
~524 MB of float32 external data, then measures, each run in a fresh
subprocess (wall time and peak RSS from ``os.wait4``):

1. the IO floor: ``onnx.load`` + ``onnx.save`` (external data) of the model;
2. ``lip-onnx denoise --rank K`` (truncation), with and without the
   onnxruntime validation;
3. calibration mode's streaming throughput: plain onnxruntime inference of
   the logits vs inference that also exposes the classifier input and feeds
   the core's ``LIPAccumulator`` (same data, same session settings), on the
   same MLP with a ``4096 -> --calib-classes`` head (the accumulator's full
   SVD of a 4096 x 32000 weight takes longer than this benchmark may run);
4. the randomized top-k SVD ``lip-onnx`` uses for truncation, and with
   ``--full-svd`` the core's full SVD of the 4096 x 32000 weight (what
   ``LIPAccumulator`` / ``project_principal`` do: many minutes).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_onnx.py [--repeat 2] [--samples 2048]``
(one BLAS thread: on a shared, oversubscribed machine OpenBLAS's spinning
threads make the small tall-skinny products of the top-k SVD up to 100x
slower; the IO floor is single-threaded anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "_work", "onnx")  # our own folder: others use _work too

_FLOOR = """
import onnx, sys, time
t = time.perf_counter()
m = onnx.load(sys.argv[1])
onnx.save(m, sys.argv[2], save_as_external_data=True, all_tensors_to_one_file=True,
          location="floor.onnx.data", size_threshold=1024)
print(time.perf_counter() - t)
"""

_SVD = """
import sys, time, numpy as np, onnx
sys.path.insert(0, sys.argv[2])
from lip_agnostic.tools.model_io import load_model
from lip_agnostic.tools.graph import select_classifier, read_weight
from lip_agnostic.svd import top_svd
from lip_agnostic import reduced_svd
L = load_model(sys.argv[1]); c = select_classifier(L)
W = np.ascontiguousarray(read_weight(L, c), dtype=np.float32)
t = time.perf_counter(); top = top_svd(W, int(sys.argv[3])); t_top = time.perf_counter() - t
out = {"top_svd_s": t_top, "top_svd_iterations": top.iterations, "converged": top.converged}
if sys.argv[4] == "1":
    t = time.perf_counter(); f = reduced_svd(W); out["full_svd_s"] = time.perf_counter() - t
    k = int(sys.argv[3])
    out["top_k_rel_err"] = float(np.max(np.abs(np.asarray(top.svd.s) - f.s[:k])) / f.s[0])
print("JSON" + __import__("json").dumps(out))
"""

_CALIB = """
import sys, time, json, numpy as np
from lip_agnostic.tools.model_io import load_model
from lip_agnostic.tools.graph import select_classifier, read_weight, read_bias
from lip_agnostic.tools.runtime import Session, batched
from lip_agnostic.tools.calibrate import feature_batches
from lip_agnostic import LIPAccumulator
path, n, bs, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
L = load_model(path); c = select_classifier(L)
rng = np.random.default_rng(0)
x = rng.random((n, 1024), dtype=np.float32); y = rng.integers(0, c.l, n)
t = time.perf_counter()
acc = LIPAccumulator(np.asarray(read_weight(L, c), dtype=np.float32), k, bias=read_bias(L, c).astype(np.float32))
t_setup = time.perf_counter() - t
plain = Session(L)
cap = Session(L, [c.input_name])
for b in batched({"x": x[:bs]}, bs): plain.run(b, ["logits"]); cap.run(b, [c.input_name])   # warm-up
t_plain, t_cal = [], []
for _ in range(3):                      # alternate, keep the best of each: the machine is shared
    t = time.perf_counter()
    for b in batched({"x": x}, bs): plain.run(b, ["logits"])
    t_plain.append(time.perf_counter() - t)
    t = time.perf_counter()
    for X, Y in feature_batches(cap, c, {"x": x}, y, bs): acc.update(X, Y)
    t_cal.append(time.perf_counter() - t)
print("JSON" + json.dumps({"plain_s": min(t_plain), "calib_s": min(t_cal), "setup_s": t_setup, "n": n,
                           "plain_all_s": t_plain, "calib_all_s": t_cal}))
"""


def _measure(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run ``cmd`` under a tiny wrapper that reports the child's own peak RSS."""
    wrapper = ("import os,sys,subprocess,time,resource;t=time.perf_counter();"
               "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
               "w=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
               "sys.stdout.write(p.stdout);sys.stderr.write(p.stderr);"
               "print('RSS',r*1024,'WALL',w);sys.exit(p.returncode)")
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    last = [ln for ln in p.stdout.splitlines() if ln.startswith("RSS ")][-1].split()
    return float(last[3]), int(last[1]), p.stdout


def _json(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith("JSON")][-1][4:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--calib-classes", type=int, default=2000)
    ap.add_argument("--full-svd", action="store_true", help="also time the core's full SVD (minutes)")
    ap.add_argument("--keep", action="store_true", help="keep benchmarks/_work")
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the test-only model builders (not shipped)
    from onnx_models import write_big_mlp

    os.makedirs(WORK, exist_ok=True)
    src = os.path.join(WORK, "big.onnx")
    results: dict = {"rank": a.rank}
    try:
        t = time.perf_counter()
        nbytes = write_big_mlp(src)
        results["model_bytes"] = nbytes + os.path.getsize(src)
        results["generate_s"] = time.perf_counter() - t
        print(f"model: {results['model_bytes'] / 1e6:.0f} MB (generated in {results['generate_s']:.1f} s)", flush=True)
        py = sys.executable
        lip = [py, "-m", "lip_agnostic.tools", "denoise", src, "-q", "--force", "--rank", str(a.rank)]
        runs = {"floor": [], "denoise": [], "denoise_novalidate": []}
        for rep in range(a.repeat):
            floor_out = os.path.join(WORK, "floor.onnx")
            runs["floor"].append(_measure([py, "-c", _FLOOR, src, floor_out]))
            for f in os.listdir(WORK):
                if f.startswith("floor"):
                    os.remove(os.path.join(WORK, f))
            out = os.path.join(WORK, "out.lip.onnx")
            for key, extra in (("denoise_novalidate", ["--no-validate"]), ("denoise", [])):
                runs[key].append(_measure(lip + ["-o", out, "--report", os.path.join(WORK, "r.json")] + extra))
                with open(os.path.join(WORK, "r.json")) as fh:
                    rj = json.load(fh)
                phases = {k: round(v, 2) for k, v in rj.items() if k.startswith("seconds")}
                results.setdefault("phases", {}).setdefault(key, []).append(phases)
                results["svd_report"] = {k: v for k, v in rj["svd"].items() if k != "top_singular_values"}
                if key == "denoise":
                    results["validation"] = rj["validation"]
            for key, vals in runs.items():
                print(f"  run {rep}: {key:20s} {vals[-1][0]:6.2f} s  peak RSS {vals[-1][1] / 1e6:6.0f} MB", flush=True)
            print(f"  phases: {results['phases']}", flush=True)
        for key, vals in runs.items():
            results[key] = {"wall_s": min(v[0] for v in vals), "all_wall_s": [v[0] for v in vals],
                            "peak_rss_bytes": min(v[1] for v in vals)}
        floor = results["floor"]["wall_s"]
        for key in ("denoise", "denoise_novalidate"):
            results[key]["ratio_vs_floor"] = results[key]["wall_s"] / floor
            results[key]["rss_vs_model"] = results[key]["peak_rss_bytes"] / results["model_bytes"]
        results["floor"]["rss_vs_model"] = results["floor"]["peak_rss_bytes"] / results["model_bytes"]

        med = os.path.join(WORK, "medium.onnx")
        write_big_mlp(med, l=a.calib_classes)
        _, rss, out = _measure([py, "-c", _CALIB, med, str(a.samples), str(a.batch), str(a.rank)])
        cal = _json(out)
        cal["ratio_time_per_sample"] = cal["calib_s"] / cal["plain_s"]
        cal["plain_samples_per_s"] = cal["n"] / cal["plain_s"]
        cal["calib_samples_per_s"] = cal["n"] / cal["calib_s"]
        cal["peak_rss_bytes"] = rss
        cal["classes"] = a.calib_classes
        results["calibration"] = cal
        print(f"calibration: plain {cal['plain_samples_per_s']:.0f} samples/s, calib {cal['calib_samples_per_s']:.0f} "
              f"samples/s (x{cal['ratio_time_per_sample']:.2f} time); accumulator setup (full SVD) {cal['setup_s']:.1f} s",
              flush=True)
        _, _, out = _measure([py, "-c", _SVD, src, os.path.dirname(HERE), str(a.rank), "1" if a.full_svd else "0"])
        results["svd"] = _json(out)
        print(f"svd: {results['svd']}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
