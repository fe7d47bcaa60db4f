"""THE entry point of the evidence: ``python -m experiments.run_all [--quick]``.

Regenerates everything, in order:

1. The paper's analysis (spectra, phi heatmaps, principal angles, Davis–Kahan)
   through ``experiments.analysis.run_analysis(out_dir, quick)``; its markdown
   becomes ``ANALYSIS.md`` next to ``EVIDENCE.md`` and a section of it.
2. The accuracy study (:mod:`experiments.accuracy`): results JSON under the
   results folder, trained heads cached under ``experiments/_cache/``
   (git-ignored; a re-run only re-evaluates LIP).
3. The full-tail study (:mod:`experiments.fulltail_study`, issue 10, beyond the
   paper): full-size data, MLPs and a small CNN, results JSON
   ``experiments/results/fulltail_<mode>.json``, trained heads and their
   features cached under ``experiments/_cache/fulltail/`` (git-ignored).
4. ``EVIDENCE.md`` with the tables, the PNG figures (``figures/``), the verdict
   and the full-tail decision.

Full mode writes ``docs/EVIDENCE.md``, ``docs/ANALYSIS.md``, ``docs/figures/*.png`` and
``experiments/results/accuracy_full.json``. ``--quick`` (digits only, one seed,
a couple of minutes) writes to ``experiments/_cache/quick/`` (git-ignored) instead,
so it never overwrites the committed full results. ``--report-only`` rebuilds
``EVIDENCE.md`` and the figures from the JSON and ``ANALYSIS.md`` already there.
``--only full-tail`` runs stage 3 alone and rebuilds ``EVIDENCE.md`` with the
accuracy study's committed JSON.

A partial run (``--only`` or ``--datasets``) never replaces the committed full
results (``docs/`` and ``experiments/results/``): without ``--out`` it writes
under ``experiments/_cache/partial/`` (git-ignored), reading what it needs from
the committed files, and says where; ``--overwrite-committed`` asks, in so many
words, for the committed files to be replaced.

Example
-------
    OMP_NUM_THREADS=2 python -m experiments.run_all            # full, ~35 min on 2 loaded cores
    python -m experiments.run_all --quick --out /tmp/evidence  # digits only
    python -m experiments.run_all --only accuracy --datasets digits  # -> experiments/_cache/partial/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from . import accuracy as acc
from . import fulltail_study as fts
from . import label_study
from .evidence import (HARM_POINTS, HELP_POINTS, LEARNER_LABEL, PRODUCT_DEFAULT, dataset_tables,
                       make_figures, summary_table, verdict)
from .methods import VARIANTS

__all__ = ["main", "write_evidence", "run_analysis_section"]

REPO = Path(__file__).resolve().parent.parent
#: Where a partial run (``--only``, ``--datasets``) writes unless given ``--out`` or ``--overwrite-committed``.
PARTIAL_DIR = acc.CACHE_DIR / "partial"
DISCUSSION = Path(__file__).resolve().parent / "evidence_discussion.md"
FULLTAIL_DISCUSSION = Path(__file__).resolve().parent / "fulltail_discussion.md"


def run_analysis_section(out_dir: Path, quick: bool, md_dir: Path, log=print) -> str:
    """Part A's analysis markdown (``experiments.analysis.run_analysis``), or a note when it is not there."""
    try:
        from .analysis import run_analysis
    except ImportError as e:
        log(f"analysis skipped: {e}")
        return f"_The analysis module is not available in this checkout ({e})._\n"
    t = time.perf_counter()
    md = run_analysis(out_dir, quick, md_dir=md_dir, log=log)
    log(f"analysis done in {time.perf_counter() - t:.1f}s")
    return md


def _command(quick: bool) -> str:
    return "python -m experiments.run_all" + (" --quick" if quick else "")


def _fit_note(records: list[dict]) -> str:
    """How much of its noisy training labels each learner fits at sym40, late snapshot (memorization check)."""
    parts = []
    for ln in ("mlp_ce", "mlp_ce_long"):
        rs = [r for r in records if r["learner"] == ln and r["setting"] == "sym40" and r["snapshot"] == "late"
              and r.get("train_fit_acc") is not None]
        if rs:
            fit = sum(r["train_fit_acc"] for r in rs) / len(rs)
            right = 100 * (1 - sum(r["noise"]["rate_actual"] for r in rs) / len(rs))
            parts.append(f"{LEARNER_LABEL.get(ln, ln)}, late, sym40: fits {fit:.0f} % of its noisy training labels, "
                         f"of which {right:.0f} % are right")
    return "; ".join(parts) if parts else "no sym40 rows"


def write_evidence(result: dict, rows: list[dict], docs_dir: Path, analysis_md: str | None,
                   quick: bool, wall: dict[str, float], fulltail: dict | None = None) -> Path:
    """Compose ``EVIDENCE.md`` (tables, figures, verdict; the full-tail section when ``fulltail`` is given)."""
    fig_dir = docs_dir / "figures"
    figs = make_figures(rows, fig_dir)
    plan = result["plan"]
    L = []
    L.append("# Evidence: where LIP helps, where it hurts\n")
    ft_md = None
    if fulltail is not None and fulltail.get("records"):
        disc = FULLTAIL_DISCUSSION.read_text() if FULLTAIL_DISCUSSION.exists() and not quick else None
        ft_md = fts.report_markdown(fulltail, fig_dir, disc)
        ft_rows = fulltail.get("rows") or fts.aggregate(fulltail["records"])
        dd = fts.decide(ft_rows)
        ad = fts.adopted(ft_rows)
        L.append("**Full-tail refit (issue 10, beyond the paper):** "
                 + (f"ADOPTED for the automatic mode ({', '.join(ad)})" if ad else
                    "not adopted; the paper-faithful default stays")
                 + " — " + "; ".join(f"`{m}` helps in {len(d['help'])} of {d['rows']} rows and harms in {len(d['harm'])}"
                                    for m, d in dd.items())
                 + " ([its section](#beyond-the-diagonal-the-full-tail-refit-issue-10-beyond-the-paper), after the "
                 "paper's LAP study).\n")
    labels_md = None
    if not quick and label_study.RESULTS.exists():
        labels_res = json.loads(label_study.RESULTS.read_text())
        labels_md = label_study.evidence_section(labels_res)
        L.append(label_study.verdict_line(labels_res))
    trained = {(r["dataset"], r["setting"], r["seed"], r["learner"]): r for r in result["records"]}
    n_cached = sum(1 for r in trained.values() if r["cached"])
    train_min = sum(r["train_s"] for r in trained.values()) / 60
    L.append(f"Generated by `{_command(quick)}` ({'QUICK mode: digits only, one seed — not the evidence' if quick else 'full mode'}); "
             f"this run took {wall.get('total', 0.0) / 60:.1f} min ("
             + (f"analysis {wall['analysis'] / 60:.1f} min, " if "analysis" in wall else
                "analysis not re-run in this invocation: its own time is in its section, ")
             + f"accuracy study {wall.get('accuracy', 0.0) / 60:.1f} min, {n_cached} of {len(trained)} trained models loaded "
             f"from `experiments/_cache/`; training all {len(trained)} took {train_min:.1f} min when first run) on a 2-core "
             f"machine **shared with other jobs** (Python {platform.python_version()}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads 1). "
             f"Core `refine_batches(rank=\"auto\")` defaults used: "
             + ", ".join(f"`{k}={v}`" for k, v in result.get("core_auto_defaults", {}).items())
             + f". Raw per-seed results: `experiments/results/accuracy_{plan['mode']}.json`.\n")
    L.append("## Verdict\n")
    L.append(verdict(rows) + "\n")
    if DISCUSSION.exists() and not quick:
        L.append(DISCUSSION.read_text().strip() + "\n")
    L.append("## Setup\n")
    sizes = []
    for ds in plan["datasets"]:
        r = next(r for r in result["records"] if r["dataset"] == ds)
        spec = plan["data"][ds]
        sizes.append(f"- **{ds}**: {r['n_fit']} training rows (noisy), {r['n_val']} held-out rows (noisy, "
                     f"{plan['val_fraction']:.0%} of the training pool), {r['n_test']} clean test rows"
                     + (f" (a seeded subset of the training pool: {spec['limit_train']} rows)" if spec["limit_train"] else "")
                     + f"; MLP `{'-'.join(map(str, spec['hidden']))}` for {spec['mlp_epochs']} epochs, "
                     f"logistic regression for {spec['linear_epochs']} epochs.")
    L.append("\n".join(sizes) + "\n")
    L.append(
        f"- Seeds {list(plan['seeds'])} (noise draw, split, initialisation); tables give mean ± std over seeds (ddof=1); "
        "gains are **paired** (LIP minus base on the same seed).\n"
        "- Noise from `lip_agnostic.noise` (symmetric: flips to a different class; asymmetric: the documented class "
        f"map per dataset; partial labels: each wrong class added with probability q = {result['partial_q']}); "
        "the **actual** rate is in every table.\n"
        "- Learners: MLP (ReLU, Adam lr 1e-3, batch 128) with CE, with GCE (q = 0.7), and with CE plus a periodic "
        f"principal-subspace projection of its head after every epoch (`project_principal`, energy {result['projection_energy']}); "
        "multinomial logistic regression on the pixels (the stand-alone learner; LIP refits its (d, l) weight); "
        f"ridge regression on the pixels (λ = {result['ridge_lambda_per_row']} × n, the paper's analysis model). "
        "Partial labels: CE is the classifier-consistent loss −log Σ_candidates p, GCE its GCE form.\n"
        "- Snapshots: *early* (after a quarter of the epochs) and *late* (the last epoch). At these epoch counts the "
        f"MLPs have **not** memorized the noise ({_fit_note(result['records'])}); the *MLP CE, long* learner (digits only: "
        + ", ".join(f"{k} {v} epochs" for k, v in result.get("long_epochs", {}).items())
        + "; the larger sets would need ~10x the CPU budget) does, and shows the memorizing regime.\n"
        f"- Help = mean paired gain ≥ {HELP_POINTS:g} point **and** above its std over seeds; harm = mean gain "
        f"below −{HARM_POINTS:g}.\n")
    L.append("LIP variants (every one through the core: `LIPAccumulator` for the fixed-k sweep, "
             "`refine_batches(W, [(X, T)], rank=\"auto\", validation=[(X_val, y_val_noisy)], bias=..., "
             "target_scale=..., tail=\"diagonal\")` with the core's other defaults for the automatic k):\n")
    L.append("| variant | targets | bias | target scale | tail fit on |\n|---|---|---|---|---|")
    for v in VARIANTS.values():
        L.append(f"| `{v.name}` | {v.description} | {'yes' if v.bias else 'no'} | {v.scale} | "
                 f"{'training rows' if v.fit_on == 'train' else 'first half of the held-out split (k scored on the second half)'} |")
    L.append(f"\n`{PRODUCT_DEFAULT}` with `rank=\"auto\"` is the paper's LIP as the product ran it by default until "
             "the full-tail study (section \"Beyond the diagonal\"): automatic k on held-out data, the layer's bias, raw "
             "targets, scale 1. It is `tail=\"diagonal\"` now; the default `tail=\"auto\"` runs the full-tail refit for "
             "`rank=\"auto\"` and this refit for a fixed rank.\n")
    L.append("## Summary over every row\n")
    L.append("Each row = dataset × setting × learner × snapshot, 3 seeds (1 in quick mode). *oracle fixed k*: the "
             "paper's sweep with k picked on the **test** set — an upper bound on what any k could do, not a method.\n")
    L.append(summary_table(rows) + "\n")
    L.append("![automatic k: gain per row](figures/accuracy_auto_gain.png)\n")
    for ds in plan["datasets"]:
        L.append(f"## {ds}\n")
        for sn, title in (("late", "Late snapshot (final epoch)"), ("early", "Early snapshot (a quarter of the epochs)")):
            t = dataset_tables(rows, ds, sn)
            if t:
                L.append(f"### {title}\n\nGain of each variant with the automatic k over the base (points, "
                         "**bold** = helps, _italic_ = harms), and the paper's best fixed k in hindsight.\n")
                L.append(t + "\n")
        L.append(f"![fixed-k sweep on {ds}](figures/accuracy_gain_vs_k_{ds}.png)\n")
    if ft_md is not None:
        L.append(ft_md)
    if labels_md is not None:
        L.append(labels_md)
    if analysis_md is not None:
        L.append("## The paper's analysis, reproduced\n")
        L.append("(Also in [ANALYSIS.md](ANALYSIS.md).)\n")
        body = analysis_md.strip()
        L.append("\n".join(("#" + ln) if ln.startswith("#") else ln for ln in body.splitlines()) + "\n")
    L.append("## Reproduce\n")
    L.append(f"```\nOMP_NUM_THREADS=2 {_command(quick)}\n```\n"
             "Trained heads are cached under `experiments/_cache/` (git-ignored): a second run only re-evaluates LIP. "
             f"Figures: {', '.join(f'`figures/{p.name}`' for p in figs)}.\n")
    out = docs_dir / "EVIDENCE.md"
    out.write_text("\n".join(L))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m experiments.run_all", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits only, one seed (a couple of minutes)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for EVIDENCE.md, ANALYSIS.md, figures/ and the results JSON "
                         "(default: docs/ + experiments/results/; --quick: experiments/_cache/quick/)")
    ap.add_argument("--cache", type=Path, default=acc.CACHE_DIR, help="trained-model cache (default experiments/_cache)")
    ap.add_argument("--no-cache", action="store_true", help="train everything afresh, cache nothing")
    ap.add_argument("--only", choices=("analysis", "accuracy", "full-tail"), default=None,
                    help="run one stage only (full-tail: rebuild EVIDENCE.md with the accuracy JSON already there)")
    ap.add_argument("--datasets", nargs="+", default=None, help="subset of digits fashion-mnist fonts (full mode)")
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild EVIDENCE.md and the figures from the results JSON and ANALYSIS.md already there")
    ap.add_argument("--overwrite-committed", action="store_true",
                    help="let a partial run (--only, --datasets) replace the committed docs/EVIDENCE.md, "
                         "docs/ANALYSIS.md, figures and experiments/results/*.json")
    a = ap.parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731

    committed_docs, committed_results = REPO / "docs", acc.RESULTS_DIR
    partial = not a.quick and not a.report_only and (a.only is not None or a.datasets is not None)
    if a.out is not None:
        docs_dir = results_dir = a.out
    elif a.quick:
        docs_dir = results_dir = acc.CACHE_DIR / "quick"
    elif partial and not a.overwrite_committed:
        docs_dir = results_dir = PARTIAL_DIR
        log(f"a partial run ({' '.join(f for f, v in (('--only ' + str(a.only), a.only), ('--datasets', a.datasets)) if v)}) "
            f"writes under {docs_dir}, not over the committed docs/ and experiments/results/ "
            "(--overwrite-committed replaces them)")
    else:
        docs_dir, results_dir = committed_docs, committed_results
    # what a redirected partial run reads: its own files, else the committed ones
    inputs_docs = docs_dir if a.out is not None or docs_dir == committed_docs else committed_docs
    inputs_results = results_dir if a.out is not None or results_dir == committed_results else committed_results
    docs_dir.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    if a.report_only:
        json_path = results_dir / f"accuracy_{'quick' if a.quick else 'full'}.json"
        if not json_path.exists():
            raise SystemExit(f"--report-only needs {json_path}; run without --report-only first")
        result = json.loads(json_path.read_text())
        ana = docs_dir / "ANALYSIS.md"
        md = write_evidence(result, result["rows"], docs_dir, ana.read_text() if ana.exists() else None,
                            a.quick, result["wall_s"], _load_fulltail(results_dir, a.quick))
        log(f"wrote {md} from {json_path}")
        return 0
    wall: dict[str, float] = {}
    t0 = time.perf_counter()

    analysis_md = None
    if a.only in (None, "analysis"):
        t = time.perf_counter()
        analysis_md = run_analysis_section(docs_dir / "figures", a.quick, docs_dir, log)
        (docs_dir / "ANALYSIS.md").write_text(analysis_md)
        wall["analysis"] = time.perf_counter() - t
    if a.only == "analysis":
        return 0
    for folder in (docs_dir, inputs_docs):
        if analysis_md is None and (folder / "ANALYSIS.md").exists():
            analysis_md = (folder / "ANALYSIS.md").read_text()

    mode = "quick" if a.quick else "full"
    if a.only == "full-tail":
        json_path = results_dir / f"accuracy_{mode}.json"
        if not json_path.exists():
            json_path = inputs_results / f"accuracy_{mode}.json"
        if not json_path.exists():
            raise SystemExit(f"--only full-tail needs the accuracy study's {json_path}; run without --only first")
        result = json.loads(json_path.read_text())
        rows, wall = result["rows"], result["wall_s"]
    else:
        t = time.perf_counter()
        plan = acc.study_plan(quick=a.quick, datasets=tuple(a.datasets) if a.datasets else None)
        log(f"accuracy study: {plan.mode} mode, datasets {plan.datasets}, seeds {plan.seeds}")
        result = acc.run_study(plan, cache_dir=None if a.no_cache else a.cache, log=log)
        wall["accuracy"] = time.perf_counter() - t
        wall["total"] = time.perf_counter() - t0
        result["wall_s"] = wall
        json_path = acc.save_results(result, results_dir / f"accuracy_{plan.mode}.json")
        rows = json.loads(json_path.read_text())["rows"]
    fulltail = None
    if a.only in (None, "full-tail"):
        fplan = fts.study_plan(mode)
        log(f"full-tail study: {fplan.mode} plan, {len(fplan.jobs)} jobs, seeds {fplan.seeds}")
        cache = None if a.no_cache else (a.cache / "fulltail")
        ft_path = results_dir / f"fulltail_{fplan.mode}.json"
        fts.save_results(fts.run_study(fplan, cache_dir=cache, log=log, results_path=ft_path), ft_path)
        fulltail = json.loads(ft_path.read_text())
    md = write_evidence(result, rows, docs_dir, analysis_md, a.quick, wall, fulltail)
    wrote = [str(md)] + ([] if a.only == "full-tail" else [str(json_path)]) + ([str(ft_path)] if fulltail else [])
    log(f"wrote {', '.join(wrote)} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


def _load_fulltail(results_dir: Path, quick: bool) -> dict | None:
    """The full-tail study's JSON under ``results_dir``, if it is there."""
    p = results_dir / f"fulltail_{'quick' if quick else 'full'}.json"
    return json.loads(p.read_text()) if p.exists() else None


if __name__ == "__main__":
    sys.exit(main())
