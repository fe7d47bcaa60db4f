"""Benchmark of the PyTorch adapter on a Fashion-MNIST MLP (ratios against baselines timed in the same run).

1. Per-epoch training wall time with ``LIPOptimizer`` (finalize-only, i.e. no
   periodic projection), with ``attach``, and with the periodic projection
   (every 50 steps; once per epoch), each divided by the bare optimizer's.
2. ``finalize`` (k="auto" with the core's hold-out: the default ``tail="auto"``,
   i.e. the full-tail search, and the paper's ``tail="diagonal"``; and a fixed k) over the
   training data divided by one plain no-grad forward pass over the same data
   and loader (batch 128 like training, and 1024 as an evaluation loader).
3. The wrapper's cost per ``step()`` call and the cost of one projection,
   timed per call on a classifier-only optimizer and scaled to an epoch
   (per-epoch ratios cannot resolve microseconds on a shared machine).

Repetitions are interleaved (A B C ... A B C ...) and medians taken, so slow
phases of a shared machine hit every variant alike. Run::

    OMP_NUM_THREADS=1 python benchmarks/bench_torch.py            # ~2-3 min on one core
    python benchmarks/bench_torch.py --train 60000 --reps 7       # the full training set

It prints a Markdown table (the one in docs/BENCHMARKS.md) and, with
``--json PATH``, writes the raw timings.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from experiments.datasets import load_fashion_mnist  # noqa: E402
from lip_agnostic import refine_batches  # noqa: E402
from lip_agnostic.adapters.torch import LIPOptimizer, attach, finalize  # noqa: E402


def make_model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def make_variant(name: str, steps_per_epoch: int):
    model = make_model(0)
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if name == "bare SGD":
        return model, base
    if name == "LIPOptimizer (finalize-only)":
        return model, LIPOptimizer(base, classifier=model[4], rank="auto")
    if name == "attach (finalize-only)":
        attach(base, model[4], rank="auto")
        return model, base
    if name == "LIPOptimizer, project every 50 steps":
        return model, LIPOptimizer(base, classifier=model[4], rank=8, project_every=50)
    if name == "LIPOptimizer, project every epoch":
        return model, LIPOptimizer(base, classifier=model[4], rank=8, project_every=steps_per_epoch)
    raise ValueError(name)


#: ``k="auto"`` without the core's sign-test guard (where the core has one), to show its share of the time.
NO_SIGN_TEST = {"confidence": None} if "confidence" in inspect.signature(refine_batches).parameters else {}

VARIANTS = [
    "bare SGD",
    "LIPOptimizer (finalize-only)",
    "attach (finalize-only)",
    "LIPOptimizer, project every 50 steps",
    "LIPOptimizer, project every epoch",
]


def train_epoch(model, opt, x, y, batch, gen) -> float:
    perm = torch.randperm(x.shape[0], generator=gen)
    start = time.perf_counter()
    for i in range(0, x.shape[0], batch):
        idx = perm[i:i + batch]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return time.perf_counter() - start


def forward_pass(model, batches) -> float:
    start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        for xb, _ in batches:
            model(xb)
    model.train()
    return time.perf_counter() - start


def timed_finalize(model, batches, k, **options) -> tuple[float, object]:
    start = time.perf_counter()
    report = finalize(model[4], batches, model=model, rank=k, progress=False, **options)
    return time.perf_counter() - start, report


def step_overhead(reps: int, calls: int = 2000) -> dict:
    """Median seconds per call of bare ``step()``, ``LIPOptimizer.step()``, attach'd ``step()`` and
    ``project_now()``, interleaved in blocks of ``calls``.

    The optimizer holds only the 128x10 classifier (gradients computed once and kept), so the
    SGD update itself is small and the wrapper's additive cost per call is resolvable; that
    cost does not depend on the model's size.
    """
    setups = {}
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(128, 128, generator=g), torch.randint(0, 10, (128,), generator=g)
    for name in ("bare", "wrapper", "attach"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(128, 10))
        base = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
        opt = LIPOptimizer(base, classifier=model[0], rank=8) if name == "wrapper" else base
        if name == "attach":
            attach(base, model[0], rank=8)
        nn.functional.cross_entropy(model(feats), labels).backward()
        setups[name] = opt
    proj = setups["wrapper"]
    times = {name: [] for name in (*setups, "project_now")}
    for _ in range(reps):
        for name, opt in setups.items():
            start = time.perf_counter()
            for _ in range(calls):
                opt.step()
            times[name].append((time.perf_counter() - start) / calls)
        start = time.perf_counter()
        for _ in range(calls // 20):
            proj.project_now(8)
        times["project_now"].append((time.perf_counter() - start) / (calls // 20))
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000, help="training samples (Fashion-MNIST subset)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions per variant")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--eval-batches", type=lambda v: [int(b) for b in v.split(",")], default=[128, 1024],
                    help="loader batch sizes for the finalize-vs-forward comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ds = load_fashion_mnist(limit_train=args.train)
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    steps = (x.shape[0] + args.batch - 1) // args.batch

    # ---- 1. per-epoch overhead
    runs = {name: make_variant(name, steps) for name in VARIANTS}
    gens = {name: torch.Generator().manual_seed(1) for name in VARIANTS}
    for name, (model, opt) in runs.items():  # warm-up epoch (allocator, first SVDs), not timed
        train_epoch(model, opt, x, y, args.batch, gens[name])
    epoch = {name: [] for name in VARIANTS}
    for _ in range(args.reps):
        for name, (model, opt) in runs.items():
            epoch[name].append(train_epoch(model, opt, x, y, args.batch, gens[name]))

    # ---- 2. finalize vs one plain forward pass (on the trained bare-SGD model), per loader batch size
    model = runs["bare SGD"][0]
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    passes = {}
    reports = {}
    for eb in args.eval_batches:
        batches = [(x[i:i + eb], y[i:i + eb]) for i in range(0, x.shape[0], eb)]
        fwd, fin_auto, fin_paper, fin_nosig, fin_fixed = [], [], [], [], []
        forward_pass(model, batches)
        for _ in range(args.reps + 2):
            fwd.append(forward_pass(model, batches))
            t, reports["auto"] = timed_finalize(model, batches, "auto")
            fin_auto.append(t)
            model.load_state_dict(trained)
            t, reports["paper"] = timed_finalize(model, batches, "auto", tail="diagonal")
            fin_paper.append(t)
            model.load_state_dict(trained)
            t, _ = timed_finalize(model, batches, "auto", tail="diagonal", **NO_SIGN_TEST)
            fin_nosig.append(t)
            model.load_state_dict(trained)
            t, reports["fixed"] = timed_finalize(model, batches, 8)
            fin_fixed.append(t)
            model.load_state_dict(trained)
        passes[eb] = (fwd, fin_auto, fin_paper, fin_nosig, fin_fixed)

    # ---- 3. the same overhead, measured per call (robust to a noisy machine): step() and one projection
    micro = step_overhead(args.reps)

    med = {name: statistics.median(v) for name, v in epoch.items()}
    base = med["bare SGD"]
    paired = {name: statistics.median(a / b for a, b in zip(v, epoch["bare SGD"])) for name, v in epoch.items()}
    print(f"Fashion-MNIST MLP 784-256-128-10, {x.shape[0]} training samples, batch {args.batch}, "
          f"{steps} steps/epoch, {args.reps} interleaved reps (+1 warm-up), torch {torch.__version__}, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}")
    print()
    print("| variant | median epoch (s) | ratio of medians | median paired ratio |")
    print("|---|---|---|---|")
    for name in VARIANTS:
        print(f"| {name} | {med[name]:.3f} | {med[name] / base:.3f} | {paired[name]:.3f} |")
    print()
    print("Per call, same run (medians of interleaved blocks; what the epoch ratios above cannot resolve):")
    print()
    print("| call | median (us) | overhead per epoch, as a fraction of the bare epoch |")
    print("|---|---|---|")
    print(f"| bare `SGD.step()` | {1e6 * micro['bare']:.1f} | - |")
    for name, label in (("wrapper", "`LIPOptimizer.step()`"), ("attach", "`step()` with `attach`")):
        extra = (micro[name] - micro["bare"]) * steps / base
        print(f"| {label} | {1e6 * micro[name]:.1f} | {100 * extra:+.3f} % |")
    per50 = micro["project_now"] * (steps // 50) / base
    per_epoch = micro["project_now"] / base
    print(f"| `project_now()` (128x10 classifier) | {1e6 * micro['project_now']:.1f} | "
          f"{100 * per50:.3f} % every 50 steps, {100 * per_epoch:.3f} % once per epoch |")
    print()
    print("| pass over the training data | loader batch | median (s) | ratio to one forward pass |")
    print("|---|---|---|---|")
    for eb, (fwd, fin_auto, fin_paper, fin_nosig, fin_fixed) in passes.items():
        f0 = statistics.median(fwd)
        print(f"| plain no-grad forward | {eb} | {f0:.3f} | 1.000 |")
        print(f"| finalize, k=\"auto\" (hold-out 1/5), default tail=\"auto\": the full-tail search | {eb} | "
              f"{statistics.median(fin_auto):.3f} | {statistics.median(fin_auto) / f0:.3f} |")
        print(f"| finalize, k=\"auto\" (hold-out 1/5), tail=\"diagonal\" (the paper) | {eb} | "
              f"{statistics.median(fin_paper):.3f} | {statistics.median(fin_paper) / f0:.3f} |")
        print(f"| finalize, k=\"auto\", tail=\"diagonal\", {', '.join(f'{k}={v}' for k, v in NO_SIGN_TEST.items()) or 'same'} | {eb} | {statistics.median(fin_nosig):.3f} | "
              f"{statistics.median(fin_nosig) / f0:.3f} |")
        print(f"| finalize, k=8 | {eb} | {statistics.median(fin_fixed):.3f} | {statistics.median(fin_fixed) / f0:.3f} |")
    print()
    print(f"finalize k=auto chose k={reports['auto'].k} (of {reports['auto'].selection.m}) with the default tail "
          f"({reports['auto'].tail}), k={reports['paper'].k} with the paper's; "
          "model= given, so no model discovery in the timings")
    if args.json:
        args.json.write_text(json.dumps({"epoch": epoch, "passes": {str(k): v for k, v in passes.items()},
                                         "args": vars(args) | {"json": str(args.json)}}, indent=1))


if __name__ == "__main__":
    main()
