"""The ``lip-onnx`` command line: exit codes, messages without tracebacks, the demo, inspect, compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime")

from lip_agnostic.tools import cli, demo
from lip_agnostic.tools.errors import EXIT_CODES
from onnx_models import mlp_model


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lip_agnostic.tools", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture
def model_file(tmp_path):
    model, _ = mlp_model(layout="gemm_t", q=12, l=6)
    onnx.save(model, tmp_path / "m.onnx")
    return str(tmp_path / "m.onnx")


def test_module_entry_point_denoises_and_prints_a_summary(model_file, tmp_path):
    r = _run("denoise", model_file, "--rank", "2", "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "truncation (PSP): k=2 of 6" in r.stdout and "validate  checker ok" in r.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rank"]["k"] == 2 and report["output"].endswith("m.lip.onnx")
    assert {"spectrum_before", "spectrum_after", "top_k_angle"} <= set(report["summary"])
    r = _run("denoise", model_file, "--rank", "2")
    assert r.returncode == 7 and "exists; pass --force" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, code, msg", [
    (["denoise", "MISSING.onnx", "--rank", "1"], 3, "model file not found"),
    (["denoise", "{m}", "--rank", "99"], 2, "--rank 99 is out of range"),
    (["denoise", "{m}", "--rank", "x"], 2, "expected an integer k or 'auto'"),
    (["denoise", "{m}", "--rank", "1", "--energy", "0.5"], 2, "not allowed with argument"),
    (["denoise", "{m}"], 2, "truncation needs --rank K or --energy F"),
    (["denoise", "{m}", "--rank", "1", "--layer", "zzz"], 4, "no Gemm/MatMul layer named 'zzz'"),
    (["denoise", "{m}", "--rank", "1", "--calib", "none.npz"], 6, "calibration file not found"),
    (["denoise", "{m}", "--rank", "1", "-o", "{m}", "--force"], 7, "would overwrite the input"),
    (["denoise", "{m}", "--rank", "1", "--batch-size", "0"], 2, "--batch-size must be positive"),
    (["denoise", "{m}", "--label-repair", "bogus"], 2, "argument --label-repair: invalid choice: 'bogus'"),
    (["denoise", "{m}", "--rank", "1", "--label-repair", "auto"], 2, "--label-repair auto .* needs --calib"),
    (["denoise", "{m}", "--rank", "1", "--issues", "i.csv"], 2, "--issues .* needs --calib"),
    (["denoise", "{m}", "--rank", "1", "--no-temperature"], 2, "--no-temperature .* needs --calib"),
    (["denoise", "{m}", "--calib", "none.npz", "--rank", "2", "--label-repair", "filter"], 2,
     "label_repair='filter' needs rank='auto' and the full tail"),
    (["denoise", "{m}", "--calib", "none.npz", "--tail", "diagonal", "--label-repair", "relabel"], 2,
     "label_repair='relabel' needs rank='auto' and the full tail .*got rank='auto', tail='diagonal'"),
    (["inspect", "{junk}"], 3, "not a readable ONNX model|not an ONNX model"),
    (["bogus"], 2, "invalid choice"),
])
def test_user_mistakes_exit_with_documented_codes_and_no_traceback(model_file, tmp_path, args, code, msg):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 10)
    args = [a.format(m=model_file, junk=junk) for a in args]
    rc = cli.main(args)
    assert rc == code and code in EXIT_CODES
    r = _run(*args, cwd=str(tmp_path))
    assert r.returncode == code
    assert "Traceback" not in r.stderr
    import re
    assert re.search(msg, r.stderr), r.stderr


def test_help_documents_the_exit_codes():
    r = _run("denoise", "--help")
    assert r.returncode == 0
    for code in (2, 3, 4, 5, 6, 7, 8):
        assert f"  {code:>3}  {EXIT_CODES[code]}" in r.stdout


def test_inspect_text_json_and_plot(model_file, tmp_path, capsys):
    assert cli.main(["inspect", model_file]) == 0
    out = capsys.readouterr().out
    assert "1 classifier candidate(s)" in out and "head (Gemm)" in out and "as (l, q)" in out
    assert cli.main(["inspect", model_file, "--json", "--plot", str(tmp_path / "s.png")]) == 0
    info = json.loads(capsys.readouterr().out)
    c = info["candidates"][0]
    s = np.asarray(c["spectrum"])
    assert len(s) == 6 and np.all(np.diff(s) <= 0)
    assert 1.0 <= c["effective_rank"] <= 6.0 and 1.0 <= c["stable_rank"] <= 6.0
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_compare_a_model_with_its_truncation(model_file, tmp_path, capsys):
    assert cli.main(["denoise", model_file, "--rank", "3", "-q"]) == 0
    assert cli.main(["compare", model_file, str(tmp_path / "m.lip.onnx"), "--json", "--k", "3", "--k", "6"]) == 0
    info = json.loads(capsys.readouterr().out)
    rows = {r["k"]: r for r in info["subspaces"]}
    assert rows[3]["phi"] == pytest.approx(1.0, abs=1e-6)      # the top-3 subspace is preserved
    assert rows[3]["max_angle_deg"] < 1e-3
    assert cli.main(["compare", model_file, model_file, "--k", "9"]) == 2


def test_demo_runs_offline_and_reports_clean_accuracy(capsys):
    assert cli.main(["demo", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_test"] == 497 and res["n_calib"] == 1000 and res["n_val"] == 300
    assert 0.0 < res["test_accuracy_before"] < 1.0 and 0.0 < res["test_accuracy_after"] < 1.0
    assert 0 <= res["k"] <= res["m"] == 10
    # before/after are real measurements of the shipped model and of the refined one
    with np.load(demo.test_path()) as z:
        assert demo.accuracy(demo.model_path(), z["pixels"], z["labels"]) == res["test_accuracy_before"]


def test_demo_with_a_fixed_rank_changes_the_model_and_saves_it(tmp_path, capsys):
    out = tmp_path / "demo.lip.onnx"
    assert cli.main(["demo", "--rank", "9", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "k=9 of 10" in text and "clean test accuracy" in text
    with np.load(demo.test_path()) as z:
        acc = demo.accuracy(str(out), z["pixels"], z["labels"])
    assert f"after {acc:.4f}" in text
    assert cli.main(["demo", "--rank", "9", "-o", str(out)]) == 7


def test_shipped_demo_files_are_small():
    folder = os.path.dirname(demo.model_path())
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in
                ("demo_digits.onnx", "demo_digits_calib.npz", "demo_digits_test.npz"))
    assert total < 1_000_000


def test_invalid_output_exits_8_and_writes_nothing(model_file, tmp_path, monkeypatch, capsys):
    from lip_agnostic.tools import api
    from lip_agnostic.tools.errors import ValidationFailedError

    def broken(_path):
        raise ValidationFailedError("the refined model fails onnx.checker: (simulated)")
    monkeypatch.setattr(api, "check_model_file", broken)
    before = sorted(os.listdir(tmp_path))
    assert cli.main(["denoise", model_file, "--rank", "2"]) == 8
    assert "fails onnx.checker" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == before


def test_inspect_of_a_large_weight_uses_the_top_of_the_spectrum(tmp_path, monkeypatch, capsys):
    from lip_agnostic.tools import api
    rng = np.random.default_rng(0)
    model, p = mlp_model(layout="gemm_t", q=150, l=120)
    monkeypatch.setattr(api, "LARGE_WEIGHT", 1000)
    onnx.save(model, tmp_path / "m.onnx")
    assert cli.main(["inspect", str(tmp_path / "m.onnx"), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["candidates"][0]
    s = np.linalg.svd(p["W"], compute_uv=False)
    assert c["effective_rank"] is None and c["spectrum_is_top"] == 64
    np.testing.assert_allclose(c["spectrum"][:4], s[:4], rtol=1e-3)
    assert c["stable_rank"] == pytest.approx(np.sum(s ** 2) / s[0] ** 2, rel=1e-3)
    assert cli.main(["inspect", str(tmp_path / "m.onnx")]) == 0
    assert "top-64 only (large weight)" in capsys.readouterr().out


def test_label_repair_prints_and_reports_the_issues_and_the_temperature(tmp_path, capsys):
    files = demo.save_inputs(str(tmp_path))
    out, report, issues = (str(tmp_path / n) for n in ("o.onnx", "r.json", "i.csv"))
    assert cli.main(["denoise", files["model"], "--calib", files["calib"], "-o", out, "--report", report,
                     "--label-repair", "auto", "--issues", issues]) == 0
    text = capsys.readouterr().out
    r = json.loads(open(report).read())
    li, t = r["label_issues"], r["temperature"]
    n_rows = sum(1 for _ in open(issues)) - 1
    assert li["n_flagged"] == n_rows > 0 and li["file"] == issues and li["n_checked"] == li["n"] == r["calibration"]["n"]
    assert f"issues    {n_rows} of {li['n']} calibration rows flagged as possibly mislabelled" in text
    assert f"listed in {issues}" in text and f", issues {issues}" in text
    # the temperature line prints the report's numbers, each named
    assert (f"logits x {t['scale']:.4g} (one temperature, fit on {t['n_samples']} held-out samples) written into the "
            f"head; held-out NLL (nats): unchanged layer {t['nll_unchanged']:.4f}, new head {t['nll_before']:.4f} -> "
            f"{t['nll_after']:.4f} with the temperature; held-out ECE (15 bins): unchanged layer "
            f"{t['ece_unchanged']:.4f}, new head {t['ece_before']:.4f} -> {t['ece_after']:.4f}") in text
    assert t["applied"] and t["nll_after"] <= t["nll_before"]
    assert "label-aware heads (beyond the paper, --label-repair auto" in text and r["tail"] == "labels"


def test_every_label_repair_of_the_core_is_a_cli_choice(tmp_path, capsys):
    from lip_agnostic.options import LABEL_REPAIR_CHOICES

    action = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["denoise"]._actions
                  if a.dest == "label_repair")
    assert tuple(action.choices) == tuple(LABEL_REPAIR_CHOICES)
    files = demo.save_inputs(str(tmp_path))
    out, report = str(tmp_path / "o.onnx"), str(tmp_path / "r.json")
    assert cli.main(["denoise", files["model"], "--calib", files["calib"], "-o", out, "--report", report,
                     "--label-repair", "neighbours"]) == 0
    assert json.loads(open(report).read())["tail"] == "labels" and "--label-repair neighbours" in capsys.readouterr().out


def test_no_temperature_leaves_the_new_head_unscaled(tmp_path, capsys):
    from lip_agnostic.tools.graph import read_weight, select_classifier
    from lip_agnostic.tools.model_io import load_model

    files = demo.save_inputs(str(tmp_path))
    heads, reports = {}, {}
    for name, extra in (("t", []), ("n", ["--no-temperature"])):
        out, report = str(tmp_path / f"{name}.onnx"), str(tmp_path / f"{name}.json")
        assert cli.main(["denoise", files["model"], "--calib", files["calib"], "-o", out, "--report", report,
                         *extra]) == 0
        reports[name] = json.loads(open(report).read())
        loaded = load_model(out)
        heads[name] = np.asarray(read_weight(loaded, select_classifier(loaded)), dtype=np.float64)
    text = capsys.readouterr().out
    assert text.count("temp      logits x") == 1                   # the default run only
    assert "temperature" not in reports["n"] and reports["t"]["temperature"]["applied"]
    assert reports["t"]["rank"]["k"] == reports["n"]["rank"]["k"] == 0
    T = reports["t"]["temperature"]["scale"]
    np.testing.assert_allclose(heads["t"], T * heads["n"], rtol=1e-5, atol=1e-7)
