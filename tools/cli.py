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

from .errors import EXIT_CODES, LipOnnxError, OutputRefusedError, UsageError
from .writer import write_bytes_atomic

__all__ = ["main", "build_parser"]

_EPILOG = "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage error: exit 2, no traceback
        self.print_usage(sys.stderr)
        raise SystemExit(_fail(f"{message}", 2))


def _fail(message: str, code: int) -> int:
    print(f"lip-onnx: error: {message}", file=sys.stderr)
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


def _target_scale(text: str):
    if text == "logits":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'logits'; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (shared by ``lip-onnx`` and ``python -m lip_agnostic.tools``)."""
    p = _Parser(prog="lip-onnx", description="LIP (principal-subspace preservation + label-ambiguity "
                "purification) for ONNX classifiers trained on noisy labels.",
                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("denoise", help="refine the classifier layer (truncation, or full LIP with --calib)",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("model", help="input .onnx (never modified)")
    d.add_argument("-o", "--output", help="output .onnx (default: <stem>.lip.onnx next to the input)")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--rank", type=_rank, help="components kept: an integer k, or 'auto' (needs --calib; the default with --calib)")
    g.add_argument("--energy", type=_fraction, help="keep the fewest components holding this fraction of ||W||_F^2")
    d.add_argument("--calib", help="calibration .npz: model inputs under their names + 'labels' "
                   "(optional held-out split: val_<input> + val_labels)")
    d.add_argument("--layer", help="classifier node, weight or output name (when several candidates)")
    d.add_argument("--force", action="store_true", help="overwrite an existing output")
    d.add_argument("--report", help="write a JSON report here")
    d.add_argument("--batch-size", type=int, default=256, help="samples per onnxruntime call (default 256)")
    d.add_argument("--target-scale", type=_target_scale, default=1.0,
                   help="LIP target scale: a number (paper: 1) or 'logits'")
    d.add_argument("--min-gain", type=float, default=0.0, help="--rank auto changes the model only above this held-out gain")
    d.add_argument("--no-validate", action="store_true", help="skip the onnxruntime old-vs-new check (the checker still runs)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")

    i = sub.add_parser("inspect", help="classifier candidates, spectrum, effective and stable rank")
    i.add_argument("model")
    i.add_argument("--layer")
    i.add_argument("--plot", help="save the singular-value spectrum to this image (needs matplotlib)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    c = sub.add_parser("compare", help="principal angles and phi between two models' classifiers")
    c.add_argument("model_a")
    c.add_argument("model_b")
    c.add_argument("--layer-a")
    c.add_argument("--layer-b")
    c.add_argument("--k", type=int, action="append", help="rank(s) to compare (repeatable; default 1, 2, 4, ..., m)")
    c.add_argument("--json", action="store_true")

    m = sub.add_parser("demo", help="denoise the embedded noisy-label digits classifier; accuracy before/after")
    m.add_argument("--rank", type=_rank, default=None, help="k or 'auto' (default: the demo's setting)")
    m.add_argument("-o", "--output", help="also save the denoised demo model here")
    m.add_argument("--force", action="store_true")
    m.add_argument("--json", action="store_true")
    return p


def _write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _fmt_spectrum(values: list, n: int = 6) -> str:
    """``[a, b, c, ..., y, z]``: the head and the last two values (where truncation shows)."""
    if len(values) <= n:
        return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
    head = ", ".join(f"{v:.4g}" for v in values[:n - 2])
    tail = ", ".join(f"{v:.4g}" for v in values[-2:])
    return f"[{head}, ..., {tail}]"


def _print_denoise(r: dict) -> None:
    lay, rk, sm = r["layer"], r["rank"], r["summary"]
    print(f"layer     {lay['node_name'] or lay['output_name']} ({lay['op_type']}), weight {lay['weight']['name']!r} "
          f"{lay['weight']['dtype']}, W (q={lay['q']}, l={lay['l']})")
    mode = "LIP (PSP + LAP)" if r["mode"] == "lip" else "truncation (PSP)"
    extra = ""
    if rk.get("strategy") == "auto":
        extra = f", held-out score {rk['best_score']:.4f} vs unchanged {rk['base_score']:.4f} ({rk['n_val']} samples)"
    print(f"mode      {mode}: k={rk['k']} of {rk['m']} ({rk['strategy']}{extra})")
    if "calibration" in r:
        cal = r["calibration"]
        print(f"calib     {cal['n']} samples ({cal['n_fit']} fit, {cal['n_val']} held-out given)")
    if "spectrum_before" in sm:
        print(f"spectrum  {_fmt_spectrum(sm['spectrum_before'])} -> {_fmt_spectrum(sm['spectrum_after'])}")
    else:
        print(f"spectrum  top {_fmt_spectrum(sm['spectrum_before_top'])}, energy kept {sm['energy_kept']:.4f}")
    print(f"change    ||W*-W||/||W|| = {sm['relative_change']:.4f}, principal angle {sm['principal_angle']:.2e} rad")
    v = r.get("validation", {})
    if v and not v.get("skipped"):
        print(f"validate  checker ok; onnxruntime on {v['samples']} samples: top-1 agreement {v['top1_agreement']:.4f}, "
              f"max logit change {v['max_logit_change']:.4g}")
    print(f"wrote     {r['output']}  ({r['seconds_total']:.2f} s)")


def _cmd_denoise(a) -> int:
    from . import api
    if a.batch_size < 1:
        raise UsageError(f"--batch-size must be positive; got {a.batch_size}")
    if a.report and os.path.abspath(a.report) == os.path.abspath(a.model):
        raise OutputRefusedError("--report would overwrite the input model")
    rank = a.energy if a.energy is not None else a.rank
    report = api.denoise_file(a.model, a.output, rank=rank, calib=a.calib, layer=a.layer, force=a.force,
                              batch_size=a.batch_size, target_scale=a.target_scale, min_gain=a.min_gain,
                              validate=not a.no_validate, progress=not a.quiet and sys.stderr.isatty())
    if a.report:
        _write_text_atomic(a.report, json.dumps(report, indent=2, default=str))
    if not a.quiet:
        _print_denoise(report)
    return 0


def _cmd_inspect(a) -> int:
    from . import api
    info = api.inspect(a.model, layer=a.layer)
    if a.plot:
        _plot(info, a.plot)
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


def _plot(info: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in info["candidates"]:
        ax.semilogy(range(1, len(c["spectrum"]) + 1), c["spectrum"], marker=".", label=c["node_name"] or c["output_name"])
    ax.set_xlabel("component i")
    ax.set_ylabel("singular value s_i")
    ax.set_title("classifier spectrum")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path)
    except (OSError, ValueError) as exc:
        raise OutputRefusedError(f"cannot save the plot to {path}: {exc}") from None
    finally:
        plt.close(fig)


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
    result = demo.run(rank=a.rank, output=a.output, force=a.force, verbose=not a.json)
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
