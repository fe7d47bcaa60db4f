"""``lip-onnx``: LIP for exported ONNX classifiers, from the command line.

Commands: ``denoise``, ``inspect``, ``compare``, ``demo`` (``lip-onnx CMD -h``).
User mistakes end with a one-line message on stderr and an exit code from
:data:`lip_agnostic.tools.errors.EXIT_CODES`; never with a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .errors import EXIT_CODES, UNCHANGED_EXIT, LipOnnxError, UsageError

#: ``--tail`` values of ``denoise`` and ``demo`` (the core's ``tail=``).
_TAILS = ("auto", "diagonal", "full")

__all__ = ["main", "build_parser"]

_EPILOG = "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage error: exit 2, no traceback
        self.print_usage(sys.stderr)
        raise SystemExit(_fail(f"{message}", 2))


def _fail(message: str, code: int) -> int:
    one_line = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"lip-onnx: error: {one_line}", file=sys.stderr)
    return code


def _rank(text: str):
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer k or 'auto'; got {text!r}") from None


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1]; got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None


def _confidence(text: str):
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) or 'none'; got {text!r}") from None


def _ridge(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'auto'; got {text!r}") from None


def _target_scale(text: str):
    if text == "logits":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'logits'; got {text!r}") from None


_FORMATTER = argparse.RawDescriptionHelpFormatter

_DENOISE = """\
Refine the classifier layer of an ONNX model; the input is never modified.

Without --calib: truncation (Principal Subspace Preservation), W* = the best
rank-k approximation of W; needs --rank K (K >= 1) or --energy F.
With --calib: the full LIP (PSP + Label Ambiguity Purification): the top k
components are kept exactly, the other singular values are refit by least
squares against the (noisy) labels; --rank auto (the default) scores every k
on held-out data and changes the model only when a k beats the unchanged one
by a significant margin (sign test at --confidence).

--label-repair (beyond the paper; needs --rank auto and the full tail) also
offers the guard ridge heads fit without ('filter') or with corrected
('relabel') labels of the calibration rows that look mislabelled ('auto':
both); --issues FILE.csv lists those rows (position,given,suggested,score,
most suspect first; position = row index in the calibration inputs) so you
can review them and fix the TRAINING data; it also works alone, with any repair.

Every path written (the output, its .data file, --report, --issues) is refused
when it is the input model, one of its external data files, the calibration
file or another output of the run (symlinks, hard links and ./x vs x included),
or exists without --force; each is staged next to its place and renamed into it."""

_INSPECT = """\
List the classifier candidates (the last Gemm/MatMul with a constant weight on
the way back from the graph outputs), with each one's weight, layout, bias,
singular-value spectrum, effective rank (Roy-Vetterli) and stable rank."""

_COMPARE = """\
Compare the classifiers of two models with the same number of classes l: for
each k, the principal angles between the top-k class-side right singular
subspaces (span of the first k columns of V in W = U S V^T, l-dimensional:
the space the class scores live in) of W_a and W_b, and the paper's
normalized similarity phi(k, k) = ||V_a[:, :k]^T V_b[:, :k]||_F^2 / k
(1 = same subspace). Use it to see how far label noise (or LIP) moved the
principal subspace."""

_DEMO = """\
Denoise the embedded demo classifier (an MLP 64-64-10 trained on sklearn
digits with 40% noisy labels, shipped in the package) and print the clean test
accuracy before and after. --save-inputs DIR instead copies the demo's model
and calibration data to DIR/model.onnx and DIR/calib.npz (the files the README
examples use) and exits."""


def _epilog(extra: str = "") -> str:
    return (extra + "\n\n" if extra else "") + _EPILOG


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (shared by ``lip-onnx`` and ``python -m lip_agnostic.tools``)."""
    from lip_agnostic import __version__
    from lip_agnostic.options import DEFAULT_CONFIDENCE, LABEL_REPAIR_CHOICES, LIPOptions
    core = LIPOptions()  # the core's defaults

    p = _Parser(prog="lip-onnx", description="LIP (principal-subspace preservation + label-ambiguity "
                "purification) for ONNX classifiers trained on noisy labels.",
                epilog=_EPILOG, formatter_class=_FORMATTER)
    p.add_argument("--version", action="version", version=f"lip-onnx (lip-agnostic) {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("denoise", help="refine the classifier layer (truncation, or full LIP with --calib)",
                       description=_DENOISE, epilog=_EPILOG, formatter_class=_FORMATTER)
    d.add_argument("model", help="input .onnx (never modified)")
    d.add_argument("-o", "--output", help="output .onnx (default: <stem>.lip.onnx next to the input); a model with "
                   "external data gets one <output>.data file next to it")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--rank", type=_rank, metavar="K|auto",
                   help="components kept: an integer k (1..min(q, l) for truncation, 0..min(q, l) with --calib), "
                        "or 'auto' (needs --calib; the default with --calib)")
    g.add_argument("--energy", type=_fraction, metavar="F",
                   help="keep the fewest components holding this fraction (0, 1] of ||W||_F^2")
    d.add_argument("--calib", metavar="DATA.npz", help="calibration .npz (numpy.savez): the model's inputs under their "
                   "names + 'labels' (n,) ints or (n, l) targets; optional held-out split val_<input> + val_labels")
    d.add_argument("--layer", metavar="NAME", help="classifier node, weight or output name (when several candidates)")
    d.add_argument("--force", action="store_true", help="overwrite existing outputs (never the input)")
    d.add_argument("--report", metavar="FILE.json", help="also write the JSON report here (same refusals as the output)")
    d.add_argument("--batch-size", type=int, default=256, metavar="N", help="samples per onnxruntime call (default 256)")
    d.add_argument("--target-scale", type=_target_scale, default=1.0, metavar="C|logits",
                   help="LIP fits C * labels (paper: 1, the default), or 'logits': C by least squares against the "
                        "model's own logits")
    d.add_argument("--bias-mode", choices=("fit", "ignore"), default="fit",
                   help="'fit' (default): the tail is fit against Y - 1 b^T with the layer's bias b; 'ignore': the "
                        "paper's reference fit, bias left out (the bias itself is changed only by --tail full)")
    d.add_argument("--tail", choices=_TAILS, default="auto",
                   help="with --calib: 'auto' (default, the committed evidence, docs/EVIDENCE.md): the full tail for "
                        "--rank auto, the paper's diagonal for a fixed rank; 'diagonal' (the paper): refit the tail's "
                        "singular values; 'full' (beyond the paper): ridge-refit the whole complement of "
                        "the kept components, and the bias with --bias-mode fit")
    d.add_argument("--ridge", type=_ridge, default=None, metavar="LAM|auto",
                   help="--tail full: the ridge lam (>= 0), or 'auto' (default): chosen with k on the held-out "
                        "data behind the same sign-test guard")
    d.add_argument("--min-gain", type=_number, default=0.0, metavar="G",
                   help="--rank auto changes the model only when the held-out score gains more than G (>= 0; default 0)")
    d.add_argument("--confidence", type=_confidence, default=DEFAULT_CONFIDENCE, metavar="P|none",
                   help=f"--rank auto: the one-sided sign test's confidence, Bonferroni over the ranks (default "
                        f"{DEFAULT_CONFIDENCE}); 'none' switches the guard off")
    d.add_argument("--label-repair", choices=tuple(LABEL_REPAIR_CHOICES), default=core.label_repair,
                   help="with --calib and --rank auto (beyond the paper): also offer the guard ridge heads fit "
                        "without ('filter'), with corrected ('relabel') or with the neighbours' ('neighbours') labels "
                        "of the calibration rows flagged as mislabelled ('auto': all three); 'none': the given "
                        f"labels only (default {core.label_repair})")
    d.add_argument("--issues", metavar="FILE.csv",
                   help="with --calib: write the calibration rows whose labels look wrong (out-of-fold confident "
                        "learning) as CSV position,given,suggested,score, most suspect first (same refusals as the "
                        "output)")
    d.add_argument("--no-temperature", action="store_true",
                   help="with --calib: do not write a temperature (fit on the held-out data) into a new head "
                        "beyond the paper; by default the core writes one when the head can take it")
    d.add_argument("--no-validate", action="store_true", help="skip the onnxruntime old-vs-new check (the checker still runs)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    d.add_argument("--exit-code", action="store_true",
                   help=f"exit {UNCHANGED_EXIT} (not 0) when the weights were left unchanged, so scripts learn it "
                        "from the exit status (like git diff --exit-code); the output is written either way")

    i = sub.add_parser("inspect", help="classifier candidates, spectrum, effective and stable rank",
                       description=_INSPECT, epilog=_EPILOG, formatter_class=_FORMATTER)
    i.add_argument("model", help="input .onnx (only read)")
    i.add_argument("--layer", metavar="NAME", help="inspect this linear layer (node, weight or output name) only")
    i.add_argument("--plot", metavar="FILE.png", help="save the singular-value spectrum to this image (needs "
                   "matplotlib; format from the extension; same refusals as denoise outputs)")
    i.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    c = sub.add_parser("compare", help="principal angles and phi between the class-side subspaces of two classifiers",
                       description=_COMPARE, epilog=_EPILOG, formatter_class=_FORMATTER)
    c.add_argument("model_a", help="first .onnx (only read)")
    c.add_argument("model_b", help="second .onnx (only read)")
    c.add_argument("--layer-a", metavar="NAME", help="classifier of model_a (when several candidates)")
    c.add_argument("--layer-b", metavar="NAME", help="classifier of model_b (when several candidates)")
    c.add_argument("--k", type=int, action="append", metavar="K",
                   help="rank(s) to compare, 1..min(m_a, m_b) (repeatable; default 1, 2, 4, ..., m)")
    c.add_argument("--json", action="store_true", help="print JSON instead of text")

    m = sub.add_parser("demo", help="denoise the embedded noisy-label digits classifier; accuracy before/after",
                       description=_DEMO, epilog=_EPILOG, formatter_class=_FORMATTER)
    m.add_argument("--rank", type=_rank, default=None, metavar="K|auto", help="k or 'auto' (default: the demo's setting, auto)")
    m.add_argument("--tail", choices=_TAILS, default="auto",
                   help="as for denoise: 'auto' (default, the committed evidence), 'diagonal' (the paper's LIP), "
                        "'full' (beyond the paper)")
    m.add_argument("-o", "--output", help="also save the denoised demo model here")
    m.add_argument("--save-inputs", metavar="DIR", help="write DIR/model.onnx and DIR/calib.npz (created if missing; "
                   "existing files are refused without --force) and exit")
    m.add_argument("--force", action="store_true", help="overwrite an existing --output / --save-inputs files")
    m.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def _fmt_spectrum(values: list, n: int = 6) -> str:
    """``[a, b, c, ..., y, z]``: the head and the last two values (where truncation shows)."""
    if len(values) <= n:
        return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
    head = ", ".join(f"{v:.4g}" for v in values[:n - 2])
    tail = ", ".join(f"{v:.4g}" for v in values[-2:])
    return f"[{head}, ..., {tail}]"


#: ``selection.labels`` of a label-aware head, in words.
_LABELS_USED = {"given": "the given labels", "filter": "the labels without the flagged rows",
                "relabel": "the labels with the flagged rows relabelled"}


def _print_denoise(r: dict) -> None:
    lay, rk, sm = r["layer"], r["rank"], r["summary"]
    print(f"layer     {lay['node_name'] or lay['output_name']} ({lay['op_type']}), weight {lay['weight']['name']!r} "
          f"{lay['weight']['dtype']}, W (q={lay['q']}, l={lay['l']})")
    mode = "LIP (PSP + LAP)" if r["mode"] == "lip" else "truncation (PSP)"
    if r.get("tail") in ("full", "labels"):
        lam = rk.get("ridge")
        lam = "-" if lam is None else f"{lam:.4g}"
        mode = f"LIP with the full-tail ridge refit (beyond the paper; ridge {lam})"
        if r["tail"] == "labels":
            fit = f", fit on {_LABELS_USED[rk['labels']]}" if rk.get("changed") else ""
            mode = (f"LIP with the full-tail ridge refit and label-aware heads (beyond the paper, --label-repair "
                    f"{r['calibration']['label_repair']}; ridge {lam}{fit})")
    extra = ""
    if rk.get("strategy") == "auto":
        extra = f": {rk['metric']} {rk['best_score']:.4f} at k={rk['k']}, {rk['base_score']:.4f} unchanged"
    print(f"mode      {mode}: k={rk['k']} of {rk['m']} ({rk['strategy']}{extra})")
    if "calibration" in r:
        cal = r["calibration"]
        held = f"{cal['n_val']} held-out given" if cal["n_val"] else "no held-out split given"
        print(f"calib     {cal['n']} samples ({cal['n_fit']} fit, {held}); bias mode {cal['bias_mode']}")
    if "spectrum_before" in sm:
        print(f"spectrum  {_fmt_spectrum(sm['spectrum_before'])} -> {_fmt_spectrum(sm['spectrum_after'])}")
    else:
        print(f"spectrum  top {_fmt_spectrum(sm['spectrum_before_top'])}, energy kept {sm['energy_kept']:.4f}")
    if sm.get("kept_unchanged") is None:
        kept = "kept components not measured (large weight)"
    elif rk["k"] == 0:
        kept = "k=0: no component kept, the whole layer refit"
    else:
        kept = (f"kept {rk['k']} components {'unchanged' if sm['kept_unchanged'] else 'CHANGED'} "
                f"(relative change {sm['kept_relative_change']:.1e}), top-{rk['k']} subspace angle "
                f"{sm['top_k_angle']:.2e} rad")
    print(f"change    ||W*-W||/||W|| = {sm['relative_change']:.4f}; {kept}")
    if "label_issues" in r:
        li = r["label_issues"]
        rows = (f"{li['n']} calibration rows" if li["n_checked"] == li["n"] else
                f"the {li['n_checked']} fit rows (the other {li['n'] - li['n_checked']} calibration rows, held out "
                "of the fit, are not checked)")
        where = f"listed in {li['file']}" if li.get("file") else "--issues FILE.csv lists them"
        print(f"issues    {li['n_flagged']} of {rows} flagged as possibly mislabelled (out-of-fold confident "
              f"learning); {where}")
    if "temperature" in r:
        t = r["temperature"]
        what = ("written into the head" if t["applied"] else f"fit, not written ({t['note']})")
        print(f"temp      logits x {t['scale']:.4g} (one temperature, fit on {t['n_samples']} held-out samples) {what}; "
              f"held-out NLL (nats): unchanged layer {t['nll_unchanged']:.4f}, new head {t['nll_before']:.4f} -> "
              f"{t['nll_after']:.4f} with the temperature; held-out ECE (15 bins): unchanged layer "
              f"{t['ece_unchanged']:.4f}, new head {t['ece_before']:.4f} -> {t['ece_after']:.4f}"
              + (" (T at the end of its search interval)" if t["at_bound"] else ""))
    v = r.get("validation", {})
    if v and not v.get("skipped"):
        src = "random inputs" if v.get("inputs") == "random" else "calibration samples"
        word = {"probabilities": "probability", "log-probabilities": "log-probability"}
        outs = "".join(f", max {word.get(o['kind'], 'output')} change {o['max_change']:.4g} ({o['name']!r})"
                       for o in v.get("outputs", []))
        print(f"validate  checker ok; onnxruntime on {v['samples']} {src}: top-1 agreement {v['top1_agreement']:.4f}, "
              f"max logit change {v['max_logit_change']:.4g}{outs}")
    elif v.get("skipped"):
        print("validate  skipped (--no-validate); the checker ran")
    print(f"result    {r['outcome']}")
    wrote = r["output"] + (f" + {os.path.basename(r['output_data'])}" if r.get("output_data") else "")
    if r.get("report"):
        wrote += f", report {r['report']}"
    if r.get("label_issues", {}).get("file"):
        wrote += f", issues {r['label_issues']['file']}"
    print(f"wrote     {wrote}  ({r['seconds_total']:.2f} s)")


def _cmd_denoise(a) -> int:
    from . import api
    rank = a.energy if a.energy is not None else a.rank
    report = api.denoise_file(a.model, a.output, rank=rank, calib=a.calib, layer=a.layer, force=a.force,
                              report=a.report, batch_size=a.batch_size, target_scale=a.target_scale,
                              min_gain=a.min_gain, confidence=a.confidence, bias_mode=a.bias_mode,
                              tail=a.tail, ridge=a.ridge, label_repair=a.label_repair, issues=a.issues,
                              **({"temperature": False} if a.no_temperature else {}),
                              validate=not a.no_validate, progress=not a.quiet and sys.stderr.isatty())
    if not a.quiet:
        _print_denoise(report)
    rk = report["rank"]
    return UNCHANGED_EXIT if a.exit_code and not rk.get("changed", rk["k"] < rk["m"]) else 0


def _cmd_inspect(a) -> int:
    from . import api
    from .model_io import load_model
    from .writer import check_outputs, input_files
    if a.plot:
        fmt = _plot_format(a.plot)
        loaded = load_model(a.model)
        check_outputs([("--plot", a.plot)], input_files(loaded), a.force)
    info = api.inspect(a.model, layer=a.layer)
    if a.plot:
        _plot(info, a.plot, fmt, a.force)
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{len(info['candidates'])} classifier candidate(s) in {info['model']}")
    for c in info["candidates"]:
        print(f"- {c['node_name'] or '<unnamed>'} ({c['op_type']}): weight {c['weight']['name']!r} {c['weight']['dtype']} "
              f"stored {c['weight']['shape']} as {c['layout']}; W (q={c['q']}, l={c['l']}); "
              f"bias {c['bias']['name']!r}" if c["bias"] else
              f"- {c['node_name'] or '<unnamed>'} ({c['op_type']}): weight {c['weight']['name']!r} {c['weight']['dtype']} "
              f"stored {c['weight']['shape']} as {c['layout']}; W (q={c['q']}, l={c['l']}); no bias")
        print(f"  spectrum {_fmt_spectrum(c['spectrum'], 8)}")
        if c.get("effective_rank") is None:
            print(f"  top-{c['spectrum_is_top']} only (large weight); stable rank {c['stable_rank']:.3f} (of {min(c['q'], c['l'])})")
        else:
            print(f"  effective rank {c['effective_rank']:.3f}, stable rank {c['stable_rank']:.3f} (of {min(c['q'], c['l'])})")
    if info["quantized"]:
        print("quantized (not refinable): " + "; ".join(info["quantized"]))
    return 0


def _matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib (pip install matplotlib)") from None
    return plt


def _plot_format(path: str) -> str:
    """The image format from the extension, checked before anything is read or written."""
    plt = _matplotlib()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    fig = plt.figure()
    formats = fig.canvas.get_supported_filetypes()
    plt.close(fig)
    if ext not in formats:
        raise UsageError(f"--plot {path}: unknown image format {ext!r}; use an extension matplotlib writes "
                         "(e.g. .png, .pdf, .svg)")
    return ext


def _plot(info: dict, path: str, fmt: str, force: bool) -> None:
    import io

    from .writer import commit_files, stage_bytes
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in info["candidates"]:
        ax.semilogy(range(1, len(c["spectrum"]) + 1), c["spectrum"], marker=".", label=c["node_name"] or c["output_name"])
    ax.set_xlabel("component i")
    ax.set_ylabel("singular value s_i")
    ax.set_title("classifier spectrum")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt)
    finally:
        plt.close(fig)
    tmp = stage_bytes(path, buf.getvalue())
    try:
        commit_files([(tmp, path)], force)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _cmd_compare(a) -> int:
    from . import api
    info = api.compare(a.model_a, a.model_b, layer_a=a.layer_a, layer_b=a.layer_b, ks=a.k)
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    for side in ("a", "b"):
        s = info[side]
        print(f"{side}: {s['layer']} W {s['shape']}, effective rank {s['effective_rank']:.3f}, "
              f"stable rank {s['stable_rank']:.3f}, spectrum {_fmt_spectrum(s['spectrum'])}")
    print(f"{'k':>5}  {'phi(k,k)':>9}  {'max angle':>10}  {'mean angle':>10}")
    for row in info["subspaces"]:
        print(f"{row['k']:>5}  {row['phi']:>9.4f}  {row['max_angle_deg']:>9.2f}°  {row['mean_angle_deg']:>9.2f}°")
    return 0


def _cmd_demo(a) -> int:
    from . import demo
    if a.save_inputs is not None:
        if a.rank is not None or a.output is not None or a.tail != "auto":
            raise UsageError("--save-inputs only copies the demo's files; run the demo without it to use "
                             "--rank/--tail/-o")
        written = demo.save_inputs(a.save_inputs, force=a.force)
        if a.json:
            print(json.dumps(written, indent=2))
        else:
            print(f"wrote {written['model']} (the demo's noisy-label digits classifier, input 'pixels', output 'logits')")
            print(f"wrote {written['calib']} (pixels + noisy labels, and a noisy held-out split val_pixels + val_labels)")
            print(f"next: lip-onnx denoise {written['model']} --calib {written['calib']}")
        return 0
    result = demo.run(rank=a.rank, tail=a.tail, output=a.output, force=a.force, verbose=not a.json)
    if a.json:
        print(json.dumps(result, indent=2))
    return 0


_COMMANDS = {"denoise": _cmd_denoise, "inspect": _cmd_inspect, "compare": _cmd_compare, "demo": _cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (see ``lip-onnx -h``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _COMMANDS[args.command](args)
    except LipOnnxError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except MemoryError:
        return _fail("out of memory", 1)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
