"""``lip-onnx denoise --calib`` against plain onnxruntime inference over the same samples.

Two models, generated under ``benchmarks/_work/calib/`` (deleted afterwards unless ``--keep``):

- ``cnn``: a CNN backbone + head, ``x (3, 32, 32) -> Conv 3->64 -> Conv 64->128 /2 -> Conv
  128->256 /2 (ReLU each) -> GlobalAveragePool -> Flatten -> Gemm 256 -> 1000`` (the head is
  ~0.6 % of the flops);
- ``head``: head-dominated, ``x (1024) -> Gemm 2048 ReLU -> Gemm 2048 -> 16,000`` (the head is
  ~94 % of the flops; a rank-64 signal plus noise, ``write_big_mlp`` in ``tests/onnx_models.py``).

Per model, each in a fresh subprocess (wall time, and the child's peak RSS via
``getrusage(RUSAGE_CHILDREN)``):

1. ``plain``: ``onnxruntime.InferenceSession`` on the model file, all ``n`` calibration samples
   in batches of 256 (logits only); the inference loop is timed apart from the session start;
2. ``denoise``: ``lip-onnx denoise MODEL --calib calib.npz --rank auto -q`` (validation on), run
   in-process through ``lip_agnostic.tools.cli.main`` with ``reduced_svd`` wrapped to time the
   one factorization of the head. From its ``--report``: ``seconds_refine`` (features streamed
   through onnxruntime + the core's accumulator + rank scoring + refit, SVD included),
   ``seconds_write``, ``seconds_validate``.

Ratios, same run: ``denoise`` process wall / ``plain`` process wall (end to end), and the
streaming part ``seconds_refine - svd`` / ``plain`` inference loop (throughput per sample).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_calib.py [--n 8192] [--models cnn head] [--tail auto]
        [--label-repair auto] [--classes 10] [--label-noise 0.4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "_work", "calib")

_PLAIN = r"""
import sys, time, json, numpy as np, onnxruntime as ort
path, calib, bs = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
opts = ort.SessionOptions(); opts.log_severity_level = 3
s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
x = np.load(calib)[name]
t_start = time.perf_counter() - t0
s.run(None, {name: x[:bs]})   # warm-up batch, as onnxruntime's first run allocates
t = time.perf_counter()
for i in range(0, len(x), bs):
    s.run(["logits"], {name: x[i:i + bs]})
print("JSON" + json.dumps({"loop_s": time.perf_counter() - t, "start_s": t_start, "n": len(x)}))
"""

_DENOISE = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import lip_agnostic.repairs.base as A  # where the repairs factorize the weight
from lip_agnostic.tools.cli import main
orig, log = A.reduced_svd, []
def timed(W, **kw):
    t = time.perf_counter(); f = orig(W, **kw); log.append((time.perf_counter() - t, f.method, list(W.shape))); return f
A.reduced_svd = timed
rc = main(sys.argv[2:])
print("JSON" + json.dumps({"rc": rc, "svd": log}))
"""


def _measure(cmd: list[str]) -> tuple[float, int, str]:
    wrapper = ("import os,sys,subprocess,time,resource;t=time.perf_counter();"
               "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
               "w=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
               "sys.stdout.write(p.stdout);sys.stderr.write(p.stderr);"
               "print('RSS',r*1024,'WALL',w);sys.exit(p.returncode)")
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    last = [ln for ln in p.stdout.splitlines() if ln.startswith("RSS ")][-1].split()
    return float(last[3]), int(last[1]), p.stdout


def _json(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith("JSON")][-1][4:])


def write_cnn(path: str, classes: int = 1000, seed: int = 0) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def conv(cin, cout):
        return (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)

    inits = [numpy_helper.from_array(conv(3, 64), "c1"), numpy_helper.from_array(np.zeros(64, np.float32), "c1b"),
             numpy_helper.from_array(conv(64, 128), "c2"), numpy_helper.from_array(np.zeros(128, np.float32), "c2b"),
             numpy_helper.from_array(conv(128, 256), "c3"), numpy_helper.from_array(np.zeros(256, np.float32), "c3b"),
             numpy_helper.from_array((rng.standard_normal((classes, 256)) / 16).astype(np.float32), "W"),
             numpy_helper.from_array((0.1 * rng.standard_normal(classes)).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "c1", "c1b"], ["h1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Conv", ["r1", "c2", "c2b"], ["h2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Conv", ["r2", "c3", "c3b"], ["h3"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["h3"], ["r3"]),
             helper.make_node("GlobalAveragePool", ["r3"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["feat"]),
             helper.make_node("Gemm", ["feat", "W", "b"], ["logits"], name="head", transB=1)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--models", nargs="+", default=["cnn", "head"], choices=["cnn", "head"])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--label-repair", default="none", choices=["none", "filter", "relabel", "neighbours", "auto"],
                    help="lip-onnx --label-repair (two passes over the calibration rows; needs --tail auto or full)")
    ap.add_argument("--classes", type=int, default=1000, help="classes of the cnn model's head (default 1000)")
    ap.add_argument("--label-noise", type=float, default=None, metavar="RATE",
                    help="calibration labels = the model's own argmax with RATE of them redrawn at random (as "
                         "after training on noisy labels); default: uniformly random labels")
    ap.add_argument("--tail", default="diagonal", choices=["auto", "diagonal", "full"],
                    help="lip-onnx --tail (default 'diagonal': the paper's refit, what docs/BENCHMARKS.md's first "
                         "table measured; 'auto' is lip-onnx's own default)")
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests"))  # the test-only model builders (not shipped)
    from onnx_models import write_big_mlp

    os.makedirs(WORK, exist_ok=True)
    rng = np.random.default_rng(0)
    results: dict = {"n": a.n, "batch": a.batch, "classes": a.classes, "label_noise": a.label_noise,
                     "label_repair": a.label_repair, "tail": a.tail, "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
                     "load_average_start": list(os.getloadavg())}
    try:
        for name in a.models:
            path = os.path.join(WORK, f"{name}.onnx")
            if name == "cnn":
                write_cnn(path, classes=a.classes)
                x = rng.standard_normal((a.n, 3, 32, 32), dtype=np.float32)
                classes = a.classes
            else:
                write_big_mlp(path, d=1024, q=2048, l=16000)
                x = rng.random((a.n, 1024), dtype=np.float32)
                classes = 16000
            calib = os.path.join(WORK, f"{name}.npz")
            labels = rng.integers(0, classes, a.n)
            if a.label_noise is not None:  # the model's own classes, some redrawn (not timed)
                import onnxruntime as ort

                sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                inp = sess.get_inputs()[0].name
                own = np.concatenate([np.argmax(sess.run(None, {inp: x[i:i + a.batch]})[0], 1)
                                      for i in range(0, a.n, a.batch)])
                labels = np.where(rng.random(a.n) < a.label_noise, labels, own)
            np.savez(calib, x=x, labels=labels)
            wall_p, rss_p, out = _measure([sys.executable, "-c", _PLAIN, path, calib, str(a.batch)])
            plain = _json(out)
            report = os.path.join(WORK, f"{name}.json")
            out_model = os.path.join(WORK, f"{name}.lip.onnx")
            wall_d, rss_d, out = _measure([sys.executable, "-c", _DENOISE, ROOT, "denoise", path, "--calib", calib,
                                           "--rank", "auto", "-o", out_model, "--force", "-q", "--report", report,
                                           "--batch-size", str(a.batch), "--tail", a.tail]
                                          + (["--label-repair", a.label_repair] if a.label_repair != "none" else []))
            den = _json(out)
            with open(report) as fh:
                rj = json.load(fh)
            svd_s = sum(v[0] for v in den["svd"])
            stream_s = rj["seconds_refine"] - svd_s
            r = {"plain_wall_s": wall_p, "plain_loop_s": plain["loop_s"], "plain_start_s": plain["start_s"],
                 "plain_peak_rss": rss_p, "denoise_wall_s": wall_d, "denoise_peak_rss": rss_d,
                 "seconds_refine": rj["seconds_refine"], "seconds_write": rj.get("seconds_write"),
                 "seconds_validate": rj.get("seconds_validate"), "svd": den["svd"], "svd_s": svd_s,
                 "stream_s": stream_s, "k": rj["rank"]["k"], "m": rj["rank"]["m"], "tail": rj.get("tail"),
                 "end_to_end_ratio": wall_d / wall_p, "stream_vs_inference": stream_s / plain["loop_s"],
                 "model_bytes": sum(os.path.getsize(os.path.join(WORK, f)) for f in os.listdir(WORK)
                                    if f.startswith(name + ".onnx"))}
            results[name] = r
            print(f"{name}: plain {wall_p:.1f} s (loop {plain['loop_s']:.1f} s), denoise {wall_d:.1f} s "
                  f"(refine {rj['seconds_refine']:.1f} s, svd {svd_s:.1f} s): end to end {r['end_to_end_ratio']:.2f}x, "
                  f"streaming {r['stream_vs_inference']:.2f}x, tail {r['tail']}, k={r['k']} of {r['m']}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    results["load_average_end"] = list(os.getloadavg())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
