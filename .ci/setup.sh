#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine: system packages (data sets, fonts),
# a virtual environment in .venv with the project, every extra and the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

if [ -s .ci/apt-packages.txt ] && command -v apt-get >/dev/null 2>&1; then
  pkgs=$(grep -v '^\s*#' .ci/apt-packages.txt | tr '\n' ' ')
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  # Data and fonts only: the tests that need them skip cleanly when they are missing.
  if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs; } >/tmp/lip-agnostic-apt.log 2>&1; then
    echo "warning: could not install system packages ($pkgs); see /tmp/lip-agnostic-apt.log" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
# setuptools >= 77 reads the SPDX `license = "MIT"`; builds without isolation (tests/test_core_package.py) use this one.
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=77"
# The CPU wheel of PyTorch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[all]" --group dev
