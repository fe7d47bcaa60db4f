#!/usr/bin/env bash
# The core on a GPU: the backend-parametrized core suite and benchmarks/bench_core.py on CUDA
# (torch) and CuPy, each where it is usable here; the others are reported as absent.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]       # OUTDIR default: build/gpu_check (or $OUT when set)
#
# Environment: PYTHON (default .venv/bin/python, else python3), BENCH_N (default 200000),
# BENCH_REPEATS (default 5), GPU_CHECK_BACKENDS (override the detection, e.g. "torch" for a dry
# run of this script's path on a CPU machine). Writes OUTDIR/{env.txt,tests.log,bench.md} and prints a summary.
# Exit status: 0 when every usable backend passed (or none is usable: nothing to check, said
# so), 1 when a test or the benchmark failed.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUTDIR=${1:-${OUT:-build/gpu_check}}
mkdir -p "$OUTDIR"

# Which GPU backends are usable: torch with a CUDA device, CuPy with a device.
backends=$("$PY" - <<'PY'
usable = []
try:
    import torch
    if torch.cuda.is_available():
        usable.append("torch-cuda")
except Exception:
    pass
try:
    import cupy
    if cupy.cuda.runtime.getDeviceCount() > 0:
        usable.append("cupy")
except Exception:
    pass
print(",".join(usable))
PY
)
backends=${GPU_CHECK_BACKENDS:-$backends}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" - <<'PY'
import platform
print("python", platform.python_version())
for name in ("numpy", "torch", "cupy", "array_api_compat"):
    try:
        mod = __import__(name)
        extra = ""
        if name == "torch":
            extra = f" (CUDA {mod.version.cuda}, device: {mod.cuda.get_device_name(0) if mod.cuda.is_available() else 'none'})"
        print(name, mod.__version__ + extra)
    except Exception as exc:
        print(name, "absent:", type(exc).__name__)
PY
  echo "usable GPU backends: ${backends:-none}"
} | tee "$OUTDIR/env.txt"

if [ -z "$backends" ]; then
  echo "gpu_check: no usable GPU backend (torch without CUDA, no CuPy device): nothing checked."
  exit 0
fi

status=0
start=$(date +%s)
# The backend-parametrized core tests (the `backend`/`xp` fixture of tests/conftest.py), only on
# the GPU backends; unparametrized tests of those files are deselected (they ran on CPU in CI).
OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} LIP_TEST_BACKENDS="$backends" \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_core_*.py tests/test_svd_reuse.py \
  -k "$(echo "$backends" | sed 's/,/ or /g')" -rs >"$OUTDIR/tests.log" 2>&1 || status=1
echo "tests ($backends): $(tail -1 "$OUTDIR/tests.log") [$(( $(date +%s) - start )) s; log $OUTDIR/tests.log]"

start=$(date +%s)
"$PY" benchmarks/bench_core.py --libs "$backends" --n "${BENCH_N:-200000}" --repeats "${BENCH_REPEATS:-5}" \
  >"$OUTDIR/bench.md" 2>&1 || status=1
echo "bench_core ($backends) [$(( $(date +%s) - start )) s]:"
sed -n '/^Command:/,$p' "$OUTDIR/bench.md"
exit $status
