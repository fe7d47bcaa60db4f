"""Start-up time of ``lip-onnx --version`` and ``-h`` against ``python -c pass``, in one run.

Each command runs ``--repeats`` times, interleaved (so machine load hits all alike); the table
gives the median wall time and its ratio to ``python -c pass``. The last row replays the start-up
path from before ``lip_agnostic.tools`` loaded its API lazily (onnx imported first), for scale.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_startup.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    lip_onnx = shutil.which("lip-onnx", path=os.path.dirname(sys.executable)) or shutil.which("lip-onnx")
    if lip_onnx is None:
        raise SystemExit("bench_startup: lip-onnx is not installed next to this Python (pip install -e '.[onnx]')")
    cmds = {
        "`python -c pass`": [sys.executable, "-c", "pass"],
        "`lip-onnx --version`": [lip_onnx, "--version"],
        "`lip-onnx -h`": [lip_onnx, "-h"],
        "`lip-onnx denoise -h`": [lip_onnx, "denoise", "-h"],
        "old path: onnx imported first, then `--version`": [
            sys.executable, "-c", "import sys, lip_agnostic.tools.api; from lip_agnostic.tools.cli import main; "
            "sys.exit(main(['--version']))"],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(a.repeats):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["`python -c pass`"])
    print(f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} python benchmarks/bench_startup.py "
          f"--repeats {a.repeats}` (median wall time of {a.repeats} interleaved runs)\n")
    print("| command | median (s) | / `python -c pass` |")
    print("|---|---:|---:|")
    for name, v in times.items():
        m = statistics.median(v)
        print(f"| {name} | {m:.3f} | {m / base:.1f}x |")


if __name__ == "__main__":
    main()
