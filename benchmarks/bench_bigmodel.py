"""A model over 2 GB (external data) through ``lip-onnx denoise``, truncation and calibrated.

Generates under ``benchmarks/_work/big/`` (deleted afterwards unless ``--keep``), block by block
so the generator itself never holds a layer: an MLP ``x (1024) -> 8192 -> (8192 -> 8192) x 8 ->
2000 classes`` (ReLU between), every weight float32 in one external data file, **2.25 GB**; the
``8192 x 2000`` head is a rank-64 signal plus noise. Then, each a fresh process under
``/usr/bin/time -v`` (peak RSS = its "Maximum resident set size"):

1. ``truncation``: ``lip-onnx denoise big.onnx --rank 64`` (validation on: 16 random inputs);
2. ``calibrated``: ``lip-onnx denoise big.onnx --calib calib.npz --rank 64`` (512 calibration
   samples; validation on: the first 512 calibration inputs through the old and the new model);
3. the input's sha256 (``.onnx`` and ``.onnx.data``) before and after: it must not change.

Peak RSS is compared with the model's size on disk (``.onnx`` + ``.data``); the calibration
``.npz`` (2 MB) is read by the process too.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_bigmodel.py [--layers 8] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "_work", "big")


def write_model(path: str, *, d: int, width: int, layers: int, classes: int, seed: int = 0) -> int:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    data_name = os.path.basename(path) + ".data"
    tensors, nodes = [], []
    with open(os.path.join(os.path.dirname(path), data_name), "wb") as fh:
        def put(name, shape, blocks):
            offset = fh.tell()
            for blk in blocks:
                fh.write(np.ascontiguousarray(blk, dtype="<f4").tobytes())
            t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(fh.tell() - offset))):
                e = t.external_data.add()
                e.key, e.value = key, value
            tensors.append(t)

        def dense(name, rows, cols):  # stored (rows=out, cols=in) for Gemm transB=1
            put(name, (rows, cols), (rng.standard_normal((min(1024, rows - s), cols), dtype=np.float32)
                                     * np.float32(np.sqrt(2.0 / cols)) for s in range(0, rows, 1024)))
            put(name + "_b", (rows,), [np.zeros(rows, np.float32)])

        prev = "x"
        dense("L0", width, d)
        nodes += [helper.make_node("Gemm", [prev, "L0", "L0_b"], ["h0"], transB=1),
                  helper.make_node("Relu", ["h0"], ["a0"])]
        prev = "a0"
        for i in range(1, layers + 1):
            dense(f"L{i}", width, width)
            nodes += [helper.make_node("Gemm", [prev, f"L{i}", f"L{i}_b"], [f"h{i}"], transB=1),
                      helper.make_node("Relu", [f"h{i}"], [f"a{i}"])]
            prev = f"a{i}"
        left = rng.standard_normal((width, 64), dtype=np.float32) * np.geomspace(1.0, 0.05, 64).astype(np.float32)
        right = rng.standard_normal((classes, 64), dtype=np.float32) / np.float32(np.sqrt(width))
        put("W", (classes, width), (right[s:s + 512] @ left.T + 0.02 / np.sqrt(width)
                                    * rng.standard_normal((min(512, classes - s), width), dtype=np.float32)
                                    for s in range(0, classes, 512)))
        put("b", (classes,), [np.zeros(classes, np.float32)])
        total = fh.tell()
    nodes.append(helper.make_node("Gemm", [prev, "W", "b"], ["logits"], name="head", transB=1))
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes])], tensors)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return total + os.path.getsize(path)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def timed_run(cmd: list[str]) -> dict:
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) * 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", p.stderr).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    return {"peak_rss_bytes": rss, "wall_s": secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--classes", type=int, default=2000)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    src = os.path.join(WORK, "big.onnx")
    res: dict = {"omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
                 "load_average_start": list(os.getloadavg())}
    try:
        t = time.perf_counter()
        res["model_bytes"] = write_model(src, d=1024, width=a.width, layers=a.layers, classes=a.classes)
        res["generate_s"] = time.perf_counter() - t
        print(f"model {res['model_bytes'] / 1e9:.3f} GB written in {res['generate_s']:.0f} s", flush=True)
        before = {f: sha256(os.path.join(WORK, f)) for f in ("big.onnx", "big.onnx.data")}
        rng = np.random.default_rng(1)
        calib = os.path.join(WORK, "calib.npz")
        np.savez(calib, x=rng.random((a.n, 1024), dtype=np.float32), labels=rng.integers(0, a.classes, a.n))
        cli = [sys.executable, "-m", "lip_agnostic.tools", "denoise", src, "-q", "--force", "--rank", "64"]
        for name, extra in (("truncation", []), ("calibrated", ["--calib", calib])):
            out = os.path.join(WORK, f"out_{name}.onnx")
            report = os.path.join(WORK, f"{name}.json")
            r = timed_run(cli + ["-o", out, "--report", report] + extra)
            with open(report) as fh:
                rj = json.load(fh)
            r.update({k: v for k, v in rj.items() if k.startswith("seconds")})
            r["mode"], r["k"] = rj["mode"], rj["rank"]["k"]
            r["validation"] = rj.get("validation")
            r["rss_vs_model"] = r["peak_rss_bytes"] / res["model_bytes"]
            r["output_bytes"] = sum(os.path.getsize(os.path.join(WORK, f)) for f in os.listdir(WORK)
                                    if f.startswith(f"out_{name}.onnx"))
            res[name] = r
            print(f"{name}: {r['wall_s']:.0f} s, peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB "
                  f"({r['rss_vs_model']:.2f}x model)", flush=True)
            for f in os.listdir(WORK):
                if f.startswith(f"out_{name}.onnx"):
                    os.remove(os.path.join(WORK, f))
        after = {f: sha256(os.path.join(WORK, f)) for f in ("big.onnx", "big.onnx.data")}
        res["input_sha256"] = before
        res["input_untouched"] = before == after
        print(f"input untouched: {res['input_untouched']}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    res["load_average_end"] = list(os.getloadavg())
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
