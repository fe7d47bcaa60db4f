"""``lip-onnx`` never loses a file: every written path is checked against the inputs and the other
outputs (symlinks, hard links, ``./x`` vs ``x``), refused when it exists without ``--force``, staged
and renamed; options are checked before any file; concurrent runs never leave a mixed model."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime")

import lip_agnostic as lip
from lip_agnostic.tools import api, cli, demo, writer
from lip_agnostic.tools.errors import OutputRefusedError
from lip_agnostic.tools.graph import read_weight, select_classifier
from lip_agnostic.tools.model_io import load_model
from onnx_models import mlp_model


def _digest(folder) -> dict:
    out = {}
    for root, _, files in os.walk(folder):
        for n in files:
            p = os.path.join(root, n)
            if not os.path.islink(p):
                out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture
def inline(tmp_path, monkeypatch):
    model, p = mlp_model(layout="gemm_t", q=12, l=6, d=5)
    onnx.save(model, tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    return "m.onnx", p


@pytest.fixture
def dynamo(tmp_path, monkeypatch):
    """A model with its weights in ``m_dynamo.onnx.data`` (what torch's dynamo exporter writes)."""
    model, p = mlp_model(layout="gemm", q=12, l=6, d=5)
    onnx.save(model, tmp_path / "m_dynamo.onnx", save_as_external_data=True, location="m_dynamo.onnx.data",
              size_threshold=0)
    monkeypatch.chdir(tmp_path)
    return "m_dynamo.onnx", p


def _refused(args, capsys, match):
    folder = os.getcwd()
    before = _digest(folder)
    names = sorted(os.listdir(folder))
    assert cli.main(args) == 7
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err
    assert _digest(folder) == before and sorted(os.listdir(folder)) == names   # nothing written, nothing changed
    return err


def test_report_on_the_output_model_is_refused(inline, capsys):
    # before: exit 0, "wrote r.onnx", and r.onnx held the JSON report
    _refused(["denoise", "m.onnx", "--rank", "2", "-o", "r.onnx", "--report", "r.onnx"], capsys,
             "--report r.onnx is the same file as output model r.onnx")
    _refused(["denoise", "m.onnx", "--rank", "2", "-o", "r.onnx", "--report", "./r.onnx"], capsys,
             "is the same file as output model r.onnx")


def test_report_on_the_inputs_external_data_is_refused(dynamo, capsys):
    # before: the input's data file was overwritten with JSON and the input no longer loaded
    _refused(["denoise", "m_dynamo.onnx", "--rank", "2", "-o", "rr.onnx", "--report", "m_dynamo.onnx.data", "--force"],
             capsys, "would overwrite the input's external data file")
    load_model("m_dynamo.onnx")


def test_report_on_the_outputs_data_file_is_refused(dynamo, capsys):
    _refused(["denoise", "m_dynamo.onnx", "--rank", "2", "-o", "rr.onnx", "--report", "rr.onnx.data"], capsys,
             "--report rr.onnx.data is the same file as the output's external data file")


def test_output_data_file_that_is_the_inputs_data_is_refused(tmp_path, monkeypatch, capsys):
    model, _ = mlp_model(layout="gemm", q=12, l=6, d=5)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="rr.onnx.data", size_threshold=0)
    monkeypatch.chdir(tmp_path)
    _refused(["denoise", "m.onnx", "--rank", "2", "-o", "rr.onnx", "--force"], capsys,
             "the output's external data file")


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_links_to_the_input_are_refused_even_with_force(dynamo, capsys, link):
    make = os.symlink if link == "symlink" else os.link
    make("m_dynamo.onnx", "alias.onnx")
    # (onnx itself refuses to read external data with several hard links, so the data file is symlinked only)
    data, what = ("m_dynamo.onnx.data", "the input's external data file") if link == "symlink" else ("m_dynamo.onnx", "the input model")
    make(data, "alias.png")
    _refused(["denoise", "m_dynamo.onnx", "--rank", "2", "-o", "alias.onnx", "--force"], capsys,
             "would overwrite the input model")
    _refused(["denoise", "m_dynamo.onnx", "--rank", "2", "--report", "alias.png", "--force"], capsys,
             f"would overwrite {what}")
    _refused(["inspect", "m_dynamo.onnx", "--plot", "alias.png", "--force"], capsys, f"would overwrite {what}")


def test_same_file_sees_hard_links_symlinks_and_dot_paths(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    os.link(tmp_path / "a", tmp_path / "h")
    os.symlink(tmp_path / "a", tmp_path / "s")
    for other in ("h", "s", "./a", "sub/../a"):
        assert writer.same_file(str(tmp_path / "a"), os.path.join(str(tmp_path), other))
    assert not writer.same_file(str(tmp_path / "a"), str(tmp_path / "b"))


def test_existing_report_and_plot_need_force(inline, capsys):
    open("r.json", "w").write("keep me")
    open("s.png", "w").write("keep me")
    _refused(["denoise", "m.onnx", "--rank", "2", "--report", "r.json"], capsys, "--report r.json exists; pass --force")
    _refused(["inspect", "m.onnx", "--plot", "s.png"], capsys, "--plot s.png exists; pass --force")
    assert cli.main(["denoise", "m.onnx", "--rank", "2", "--report", "r.json", "--force", "-q"]) == 0
    assert json.load(open("r.json"))["rank"]["k"] == 2
    assert cli.main(["inspect", "m.onnx", "--plot", "s.png", "--force"]) == 0
    assert open("s.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_on_the_input_and_unknown_formats_are_refused_before_writing(inline, capsys):
    os.symlink("m.onnx", "m.png")
    _refused(["inspect", "m.onnx", "--plot", "./m.png", "--force"], capsys, "would overwrite the input model")
    before = sorted(os.listdir("."))
    assert cli.main(["inspect", "m.onnx", "--plot", "spectrum.xyz"]) == 2
    assert "unknown image format 'xyz'" in capsys.readouterr().err and sorted(os.listdir(".")) == before


def test_the_report_is_staged_with_the_model_and_nothing_is_written_on_failure(inline, capsys, monkeypatch):
    from lip_agnostic.tools.errors import ValidationFailedError

    def broken(_path):
        raise ValidationFailedError("the refined model fails onnx.checker: (simulated)")
    monkeypatch.setattr(api, "check_model_file", broken)
    before = sorted(os.listdir("."))
    assert cli.main(["denoise", "m.onnx", "--rank", "2", "--report", "r.json"]) == 8
    assert sorted(os.listdir(".")) == before   # neither the model, nor the report, nor a staging file


def test_demo_output_and_save_inputs_refuse_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--save-inputs", "inputs"]) == 0
    out = capsys.readouterr().out
    assert "wrote inputs/model.onnx" in out and "wrote inputs/calib.npz" in out
    with open(demo.model_path(), "rb") as a, open("inputs/model.onnx", "rb") as b:
        assert a.read() == b.read()
    with np.load("inputs/calib.npz") as z:
        assert sorted(z.files) == ["labels", "pixels", "val_labels", "val_pixels"]
    os.remove("inputs/model.onnx")          # one of two left: neither is written
    _refused(["demo", "--save-inputs", "inputs"], capsys, "--save-inputs calib inputs/calib.npz exists")
    assert os.listdir("inputs") == ["calib.npz"]
    assert cli.main(["demo", "--save-inputs", "inputs", "--force", "--json"]) == 0
    assert sorted(os.listdir("inputs")) == ["calib.npz", "model.onnx"]
    _refused(["demo", "-o", demo.model_path(), "--force"], capsys, "would overwrite the demo's packaged model")


def test_options_are_checked_before_the_output(inline, capsys):
    # before: every one of these said only "output m.lip.onnx exists" (exit 7)
    assert cli.main(["denoise", "m.onnx", "--rank", "2", "-q"]) == 0
    capsys.readouterr()
    cases = [(["--rank", "2", "--calib", "missing.npz"], 6, "calibration file not found"),
             (["--rank", "-1"], 2, "--rank -1 is out of range"),
             (["--energy", "1.5"], 2, "--energy must lie in (0, 1]"),
             (["--rank", "2", "--layer", "nope"], 4, "no Gemm/MatMul layer named 'nope'"),
             (["--rank", "99"], 2, "--rank 99 is out of range"),
             (["--rank", "2", "--min-gain", "-0.1"], 2, "--min-gain must be >= 0"),
             (["--rank", "2", "--batch-size", "0"], 2, "--batch-size must be positive"),
             (["--rank", "2", "--target-scale", "-3"], 2, "--target-scale must be positive"),
             (["--rank", "2", "--confidence", "1.5"], 2, "--confidence must lie in (0, 1)")]
    for extra, code, msg in cases:
        assert cli.main(["denoise", "m.onnx", *extra]) == code, extra
        err = capsys.readouterr().err
        assert msg in err and "exists" not in err, (extra, err)


def test_rank_zero_is_refused_for_truncation_but_allowed_with_calibration(inline, capsys, tmp_path):
    # before: exit 0 and a zero classifier (||W*-W||/||W|| = 1)
    assert cli.main(["denoise", "m.onnx", "--rank", "0"]) == 2
    assert "--rank 0 without --calib would zero the classifier" in capsys.readouterr().err
    assert not os.path.exists("m.lip.onnx")
    with pytest.raises(api.UsageError, match="would zero the classifier"):
        api.denoise("m.onnx", rank=0)
    rng = np.random.default_rng(0)
    np.savez("c.npz", x=rng.random((60, 5), dtype=np.float32), labels=rng.integers(0, 6, 60))
    report = api.denoise_file("m.onnx", rank=0, calib="c.npz")
    assert report["rank"]["k"] == 0 and report["summary"]["relative_change"] < 1.0


def _run_concurrently(path, out, ranks):
    """Two runs to one output, interleaved at the worst moment: the second runs entirely between
    the first's two renames (its data file, then its model) unless something makes it wait."""
    real = writer._replace
    first_data_in_place, second_done = threading.Event(), threading.Event()

    def replace(src, dst):
        real(src, dst)
        if threading.current_thread().name == "first" and dst.endswith(".data"):
            first_data_in_place.set()
            second_done.wait(timeout=3.0)   # with the lock the second cannot finish: go on after 3 s

    errors = []

    def job(rank, name):
        try:
            if name == "second":
                first_data_in_place.wait(timeout=30)
            api.denoise_file(path, out, rank=rank, force=True, validate=False)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            if name == "second":
                second_done.set()
    writer._replace = replace
    try:
        threads = [threading.Thread(target=job, args=(r, n), name=n) for r, n in zip(ranks, ("first", "second"))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        writer._replace = real
    assert not errors, errors


def test_concurrent_runs_to_one_output_never_leave_a_mixed_model(dynamo):
    # Without the lock: first writes its data, second writes data + model, first writes its model:
    # a model stamped k=2 whose data holds the rank-4 weight.
    _run_concurrently("m_dynamo.onnx", "out.onnx", (2, 4))
    loaded = load_model("out.onnx")
    c = select_classifier(loaded)
    W = np.asarray(read_weight(loaded, c), dtype=np.float64)
    stamp = json.loads({p.key: p.value for p in loaded.model.metadata_props}["lip_agnostic"])
    assert np.linalg.matrix_rank(W, tol=1e-4) == stamp["k"]
    assert sorted(n for n in os.listdir(".") if n.startswith(".lip-onnx")) == []


def test_a_second_run_without_force_never_overwrites_the_first(inline):
    writer.check_outputs([("output", "new.onnx")], [], force=False)     # both runs pass the early check ...
    open("new.onnx", "w").write("first run")                              # ... the first one commits ...
    tmp = writer.stage_bytes("new.onnx", b"second run")
    with pytest.raises(OutputRefusedError, match="appeared while this run was working"):
        writer.commit_files([(tmp, "new.onnx")], force=False)               # ... the second is refused
    assert open("new.onnx").read() == "first run"
    os.remove(tmp)


def test_kept_components_are_reported_unchanged_when_the_top_k_angle_is_large(tmp_path, monkeypatch, capsys):
    # before: "principal angle 1.57e+00 rad" although the kept components are bit-for-bit intact
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--save-inputs", "."]) == 0
    capsys.readouterr()
    assert cli.main(["denoise", "model.onnx", "--calib", "calib.npz", "--rank", "8", "--target-scale", "100",
                     "--report", "r.json"]) == 0
    out = capsys.readouterr().out
    s = json.load(open("r.json"))["summary"]
    assert s["kept_unchanged"] is True and s["kept_relative_change"] < 1e-6
    assert s["top_k_angle"] == pytest.approx(np.pi / 2)
    assert "kept 8 components unchanged" in out and "top-8 subspace angle 1.57e+00 rad" in out
    W0 = np.asarray(read_weight(load_model("model.onnx"), select_classifier(load_model("model.onnx"))), np.float64)
    W1 = np.asarray(read_weight(load_model("model.lip.onnx"), select_classifier(load_model("model.lip.onnx"))), np.float64)
    Vk = np.linalg.svd(W0)[2][:8].T
    np.testing.assert_allclose(W1 @ Vk, W0 @ Vk, atol=1e-5)   # the kept components, measured on the files


def test_validation_says_random_inputs_and_names_probability_outputs(inline, capsys):
    assert cli.main(["denoise", "m.onnx", "--rank", "2"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime on 16 random inputs:" in out and "max logit change" in out
    assert "max probability change" in out and "('probs')" in out
    rng = np.random.default_rng(0)
    np.savez("c.npz", x=rng.random((40, 5), dtype=np.float32), labels=rng.integers(0, 6, 40))
    assert cli.main(["denoise", "m.onnx", "--rank", "2", "--calib", "c.npz", "-o", "c.onnx"]) == 0
    assert "onnxruntime on 40 calibration samples:" in capsys.readouterr().out


def test_auto_that_keeps_the_model_says_so_and_why(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--save-inputs", "."]) == 0
    capsys.readouterr()
    # the paper's diagonal refit keeps the demo model (the default --tail auto changes it: see the README)
    assert cli.main(["denoise", "model.onnx", "--calib", "calib.npz", "--tail", "diagonal"]) == 0
    out = capsys.readouterr().out
    assert "(auto: top-1 accuracy against the held-out labels 0.3133 at k=10, 0.3133 unchanged)" in out
    result = [line for line in out.splitlines() if line.startswith("result")][0]
    assert "unchanged: no k < 10 beat the unchanged model's top-1 accuracy against the held-out labels" in result
    assert "one-sided sign test, confidence 0.95" in result
    assert "on the validation data (300 samples)" in result  # the core's sentence: LIPResult.outcome
    with np.load("calib.npz") as z:
        np.savez("nosplit.npz", pixels=z["pixels"], labels=z["labels"])
    assert cli.main(["denoise", "model.onnx", "--calib", "nosplit.npz", "-o", "b.onnx", "--tail", "diagonal"]) == 0
    out = capsys.readouterr().out
    assert "every 5th fit sample, held out of the fit (200 samples)" in out


def test_bias_mode_and_confidence_reach_the_core(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, p = mlp_model(layout="gemm_t", q=12, l=6, d=5)
    onnx.save(model, "m.onnx")
    rng = np.random.default_rng(1)
    x = rng.random((80, 5), dtype=np.float32)
    y = rng.integers(0, 6, 80)
    np.savez("c.npz", x=x, labels=y)
    feats = np.maximum(x.astype(np.float64) @ p["W1"].astype(np.float64) + p["b1"], 0)
    W = p["W"].astype(np.float32).astype(np.float64)
    b = p["b"].astype(np.float32).astype(np.float64)
    for mode in ("fit", "ignore"):
        assert cli.main(["denoise", "m.onnx", "--calib", "c.npz", "--rank", "3", "--bias-mode", mode,
                         "-o", f"{mode}.onnx", "-q"]) == 0
        loaded = load_model(f"{mode}.onnx")
        got = np.asarray(read_weight(loaded, select_classifier(loaded)), np.float64)
        want = lip.refine_batches(W, [(feats, y)], rank=3, bias=b, bias_mode=mode).weight
        np.testing.assert_allclose(got, want, atol=1e-4)
    report = api.denoise_file("m.onnx", "n.onnx", calib="c.npz", confidence=None)
    assert report["rank"]["extra"]["confidence"] is None


def test_help_documents_every_option_exit_codes_and_what_compare_compares(capsys):
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subs.items():
        assert cli.main([name, "--help"]) == 0
        text = capsys.readouterr().out
        assert "exit codes:" in text and "  7  output refused" in text, name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            for opt in action.option_strings:
                assert opt in text
    assert cli.main(["compare", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "top-k class-side right singular subspaces" in text and "phi(k, k)" in text


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lip-onnx (lip-agnostic) {lip.__version__}"


# ----------------------------------------------------------------------------- targets that are not regular files, write errors
def _cli(args):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from lip_agnostic.tools import cli

    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = cli.main([str(a) for a in args])
    return code, err.getvalue()


def _mlp_file(folder):
    from onnx_models import mlp_model

    path = os.path.join(folder, "m.onnx")
    onnx.save(mlp_model()[0], path)
    return path


def test_a_fifo_target_is_refused_even_with_force(tmp_path):
    m = _mlp_file(tmp_path)
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    code, err = _cli(["denoise", m, "--rank", "1", "-o", fifo, "--force"])
    assert code == 7 and "is a FIFO (named pipe); only a regular file is ever replaced" in err, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_character_device_target_is_refused_even_with_force(tmp_path):
    m = _mlp_file(tmp_path)
    code, err = _cli(["denoise", m, "--rank", "1", "-o", "/dev/null", "--force"])
    assert code == 7 and "/dev/null is a character device" in err, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_link_to_the_standard_output_is_refused_in_a_real_process(tmp_path):
    m = _mlp_file(tmp_path)
    link = tmp_path / "out.onnx"
    os.symlink("/proc/self/fd/1", link)
    proc = subprocess.run([sys.executable, "-m", "lip_agnostic.tools", "denoise", m, "--rank", "1", "-o", str(link),
                           "--force"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 7, proc.stderr
    assert "only a regular file is ever replaced" in proc.stderr and "Traceback" not in proc.stderr
    assert os.path.islink(link) and os.readlink(link) == "/proc/self/fd/1"


@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only file system"),
                                        (errno.EACCES, "no permission")])
def test_a_write_the_system_refuses_is_one_line_exit_9_and_leaves_nothing(tmp_path, monkeypatch, err, words):
    from lip_agnostic.tools import writer

    m = _mlp_file(tmp_path)
    before = sorted(os.listdir(tmp_path))

    def refuse(src, dst):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(writer, "_replace", refuse)
    code, text = _cli(["denoise", m, "--rank", "1", "-o", tmp_path / "r.onnx", "--report", tmp_path / "r.json"])
    assert code == 9 and "Traceback" not in text, text
    assert text.count("\n") == 1 and words in text and "nothing was written" in text, text
    assert sorted(os.listdir(tmp_path)) == before  # nothing partial left


def test_a_full_disk_while_staging_is_exit_9(tmp_path, monkeypatch):
    import tempfile

    m = _mlp_file(tmp_path)
    before = sorted(os.listdir(tmp_path))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    code, text = _cli(["denoise", m, "--rank", "1", "-o", tmp_path / "r.onnx"])
    assert code == 9 and "the disk is full" in text and sorted(os.listdir(tmp_path)) == before, text


def test_a_bias_another_node_reads_is_never_refit(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from lip_agnostic.tools import api
    from lip_agnostic.tools.errors import UnsupportedWeightError

    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.normal(size=(5, 4)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b")
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["logits"], name="head"),
             helper.make_node("Add", ["logits", "b"], ["shifted"], name="reader")]  # reads the bias too
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
                          [helper.make_tensor_value_info("shifted", TensorProto.FLOAT, ["n", 4])], [W, b])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(200, 5)).astype(np.float32)
    calib = {"x": x, "labels": rng.integers(0, 4, 200)}
    with pytest.raises(UnsupportedWeightError, match=r"the refit changes bias 'b', which 1 other node\(s\) "
                                                     r"\['reader'\] also read"):
        api.denoise(model, rank=0, calib=calib, tail="full", ridge=1.0)
    api.denoise(model, rank=2, calib=calib, tail="diagonal")  # the paper's refit leaves the bias alone


@pytest.mark.parametrize("extra, flags", [(["--confidence", "0.9"], "--confidence"),
                                          (["--min-gain", "0.01"], "--min-gain"),
                                          (["--confidence", "0.9", "--min-gain", "0.01"], "--confidence and --min-gain")])
def test_selection_options_with_a_fixed_rank_are_refused(tmp_path, extra, flags):
    m = _mlp_file(tmp_path)
    code, err = _cli(["denoise", m, "--rank", "1", *extra])
    assert code == 2 and f"{flags} only act(s) when a candidate is chosen on held-out data behind the significance guard" in err, err


def test_fp16_calibration_values_that_overflow_say_so(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from lip_agnostic.tools import api
    from lip_agnostic.tools.errors import CalibrationError

    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.normal(size=(5, 4)).astype(np.float16), "W")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["logits"], name="head")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 5])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["n", 4])], [W])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(40, 5)).astype(np.float32)
    x[3, 2] = 1e6  # finite in float32, infinite in float16
    with pytest.raises(CalibrationError, match=r"calibration array 'x' overflows float16, the dtype of model input "
                                               r"'x': its values reach 1e\+06 but float16 holds at most 6.55e\+04"):
        api.denoise(model, rank=2, calib={"x": x, "labels": rng.integers(0, 4, 40)})


def test_a_fixed_rank_with_the_full_tail_forces_the_change_and_chooses_only_the_ridge(tmp_path):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from lip_agnostic.tools import cli

    folder = tmp_path / "d"
    demo.save_inputs(str(folder))
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        code = cli.main(["denoise", str(folder / "model.onnx"), "--calib", str(folder / "calib.npz"), "--tail", "full",
                         "--rank", "3", "-o", str(tmp_path / "out2.onnx"), "--report", str(tmp_path / "r.json")])
    said = out.getvalue()
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["rank"]["k"] == 3 and report["rank"]["changed"] is True, said
    assert report["rank"]["extra"]["guarded"] is False and report["rank"]["ridge"] is not None
    assert "unchanged" not in report["outcome"] and "forces a change" not in said
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = cli.main(["denoise", str(folder / "model.onnx"), "--calib", str(folder / "calib.npz"), "--tail", "full",
                         "--rank", "3", "--confidence", "0.5", "-o", str(tmp_path / "out3.onnx")])
    assert code == 2 and "--confidence only act(s) when a candidate is chosen" in err.getvalue()


# ----------------------------------------------------------------------------- --issues: an output like the others
@pytest.fixture
def with_calib(inline):
    rng = np.random.default_rng(0)
    np.savez("c.npz", x=rng.random((60, 5), dtype=np.float32), labels=rng.integers(0, 6, 60))
    return inline


@pytest.mark.parametrize("args, match", [
    (["--issues", "m.onnx", "--force"], "--issues m.onnx would overwrite the input model (m.onnx)"),
    (["--issues", "./c.npz", "--force"], "--issues ./c.npz would overwrite the calibration data (c.npz)"),
    (["-o", "o.onnx", "--issues", "o.onnx"], "--issues o.onnx is the same file as output model o.onnx"),
    (["--report", "r.json", "--issues", "./r.json"], "--issues ./r.json is the same file as --report r.json"),
    (["--report", "c.npz", "--force"], "--report c.npz would overwrite the calibration data (c.npz)"),
])
def test_issues_on_an_input_or_another_output_is_refused(with_calib, capsys, args, match):
    _refused(["denoise", "m.onnx", "--calib", "c.npz", "--label-repair", "auto", *args], capsys, match)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_issues_on_a_link_to_an_input_is_refused_even_with_force(with_calib, capsys, link):
    make = os.symlink if link == "symlink" else os.link
    make("c.npz", "alias.csv")
    make("m.onnx", "model.csv")
    _refused(["denoise", "m.onnx", "--calib", "c.npz", "--issues", "alias.csv", "--force"], capsys,
             "would overwrite the calibration data (c.npz)")
    _refused(["denoise", "m.onnx", "--calib", "c.npz", "--issues", "model.csv", "--force"], capsys,
             "would overwrite the input model (m.onnx)")


def test_an_existing_issues_file_needs_force(with_calib, capsys):
    open("i.csv", "w").write("keep me")
    _refused(["denoise", "m.onnx", "--calib", "c.npz", "--issues", "i.csv"], capsys, "--issues i.csv exists; pass --force")
    assert cli.main(["denoise", "m.onnx", "--calib", "c.npz", "--issues", "i.csv", "--force", "-q"]) == 0
    assert open("i.csv").readline() == "position,given,suggested,score\n"


def test_the_issues_file_is_staged_with_the_model_and_nothing_is_written_on_failure(with_calib, monkeypatch):
    import tempfile

    from lip_agnostic.tools.errors import ValidationFailedError

    before = sorted(os.listdir("."))

    def broken(_path):
        raise ValidationFailedError("the refined model fails onnx.checker: (simulated)")
    with monkeypatch.context() as m:
        m.setattr(api, "check_model_file", broken)
        assert _cli(["denoise", "m.onnx", "--calib", "c.npz", "--issues", "i.csv"])[0] == 8
    assert sorted(os.listdir(".")) == before
    real = tempfile.mkstemp

    def full_for_csv(*a, **k):  # the disk fills up while the CSV is staged, after the model was
        if k.get("suffix") == ".csv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)
    monkeypatch.setattr(tempfile, "mkstemp", full_for_csv)
    code, text = _cli(["denoise", "m.onnx", "--calib", "c.npz", "--issues", "i.csv", "--report", "r.json"])
    assert code == 9 and "could not write i.csv" in text and "the disk is full" in text, text
    assert sorted(os.listdir(".")) == before


def test_an_issues_write_the_system_refuses_is_exit_9(with_calib, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    before = sorted(os.listdir("."))
    monkeypatch.setattr(writer, "_replace", refuse)
    code, text = _cli(["denoise", "m.onnx", "--calib", "c.npz", "--issues", "i.csv"])
    assert code == 9 and "no permission" in text and text.count("\n") == 1, text
    assert sorted(os.listdir(".")) == before
