"""``lstm-fast bench``: every mode through a subprocess on a tiny synthetic model, the JSON
schema, the plot, --compare (a missing framework is skipped; a fake peer in-process for the
table, the ratios and the mismatch check), the --spec grammar and the FLOP count."""

import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from lstm_fast import bench
from lstm_fast.bench_spec import parse_spec
from lstm_fast.errors import FrameworkUnavailable

TINY = "lstm:I=4,H=8,L=2"
FAST = ("--iters", "30", "--warmup", "2")


def lstm_fast(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstm_fast", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_step_mode_reports_latency_throughput_gflops_and_real_time_factor():
    run = lstm_fast("bench", "--spec", TINY, *FAST, "--frame-rate", "100")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "lstm_fast 0.1.0, isa " in out and "(core " in out and "1 thread for every" in out
    assert "mode step: batch 1, 1 frame per call" in out
    for text in ("p50 ", "p90 ", "p99 ", "max ", "(30 calls)", "per time step:", "frames/s",
                 "GFLOP/s:", "% of the sgemm peak", "sgemm peak:", "real-time factor at 100 Hz"):
        assert text in out, text
    assert run.stderr == ""  # no progress bar when stderr is not a terminal


def test_chunk_mode_with_progress_bar():
    run = lstm_fast("bench", "--spec", "gru:I=3,H=5", "--mode", "chunk", "--chunk", "7",
                    "--batch", "2", *FAST, "--no-peak", "--progress")
    assert run.returncode == 0, run.stderr
    assert "mode chunk: batch 2, 7 frames per call" in run.stdout
    assert "sgemm peak" not in run.stdout and "of the sgemm peak" not in run.stdout
    assert "bench [" in run.stderr and "%  lstm_fast" in run.stderr  # (\r read as \n)


def test_sequence_mode_ragged_json_schema(tmp_path):
    path = tmp_path / "bench.json"
    run = lstm_fast("bench", "--spec", "emb:V=50,D=6/bilstm:H=5,last=1/dense:O=3,act=softmax",
                    "--mode", "sequence", "--steps", "12", "--batch", "3", "--lengths",
                    "random", *FAST, "--json", str(path))
    assert run.returncode == 0, run.stderr
    assert "sequences/s" in run.stdout and f"wrote {path}" in run.stdout
    doc = json.loads(path.read_text())
    assert doc["schema"] == "lstm_fast.bench/1"
    assert set(doc) == {"schema", "config", "environment", "model", "peak", "engines", "noisy"}
    cfg = doc["config"]
    assert cfg["mode"] == "sequence" and cfg["batch"] == 3 and cfg["iters"] == 30
    lengths = cfg["lengths"]
    assert len(lengths) == 3 and all(3 <= n <= 12 for n in lengths)
    assert {"lstm_fast", "isa", "blas", "blas_core", "threads", "cpu"} <= set(doc["environment"])
    assert doc["model"]["takes_ids"] and doc["model"]["parameters"] > 0
    # FLOP: only valid steps of the BiLSTM, the Dense once per sequence
    per_step = 2 * 2 * (20 * 6 + 20 * 5)
    assert doc["model"]["flop_per_step"] == per_step
    assert doc["model"]["flop_per_call"] == per_step * sum(lengths) + 3 * 2 * 3 * 10
    assert doc["peak"]["sgemm_gflops"] > 0 and doc["peak"]["size"] == 1024
    (engine,) = doc["engines"]
    assert engine["name"] == "lstm_fast" and engine["status"] == "ok"
    stats = engine["stats"]
    for key in ("calls", "p50_us", "p90_us", "p99_us", "max_us", "us_per_step",
                "frames_per_s", "sequences_per_s", "gflops", "peak_fraction", "rtf"):
        assert key in stats, key
    assert stats["calls"] == 30 and len(engine["latencies_us"]) == 30
    assert stats["p50_us"] <= stats["p90_us"] <= stats["p99_us"] <= stats["max_us"]
    assert stats["p50_us"] == pytest.approx(np.percentile(engine["latencies_us"], 50), rel=1e-3)
    assert stats["ratio_vs_lstm_fast"] == 1.0


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib not installed")
def test_plot_file_written(tmp_path):
    path = tmp_path / "latency.png"
    run = lstm_fast("bench", "--spec", TINY, *FAST, "--no-peak", "--plot", str(path))
    assert run.returncode == 0, run.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _without(tmp_path, module: str) -> dict:
    """An environment in which importing ``module`` raises ImportError."""
    (tmp_path / f"{module}.py").write_text(f"raise ImportError('{module} disabled by the "
                                           f"test')\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))


def test_plot_without_matplotlib_is_a_one_line_error(tmp_path):
    run = lstm_fast("bench", "--spec", TINY, *FAST, "--no-peak", "--plot",
                    str(tmp_path / "x.png"), env=_without(tmp_path, "matplotlib"))
    assert run.returncode == 2 and run.stdout == ""  # refused before timing anything
    assert run.stderr == ("lstm-fast: error: --plot needs matplotlib: pip install "
                          "'lstm_fast[plot]'\n")


def test_compare_with_a_missing_framework_is_skipped(tmp_path):
    run = lstm_fast("bench", "--spec", TINY, *FAST, "--no-peak", "--compare", "onnxruntime",
                    env=_without(tmp_path, "onnxruntime"))
    assert run.returncode == 0, run.stderr
    assert "skipped: onnxruntime" in run.stdout
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--spec", "lstm:H=8"), "lstm-fast: error: --spec: layer 0 (lstm) needs I="),
    (("--spec", "conv:I=3"), "lstm-fast: error: --spec: unknown layer kind 'conv'"),
    (("--spec", "lstm:I=3,H=x"), "lstm-fast: error: --spec: layer 0 (lstm): H must be"),
    (("--spec", TINY, "--compare", "tensorflw"), "lstm-fast: error: --compare: unknown"),
    (("--spec", "bilstm:I=3,H=4"), "lstm-fast: error: this model has a layer that reads"),
    (("--spec", TINY, "--lengths", "3,4"), "lstm-fast: error: --lengths applies to --mode"),
    ((), "lstm-fast: error: give one of MODEL, --spec or --source"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    run = lstm_fast("bench", *args, *FAST, "--no-peak")
    assert run.returncode == 2
    assert run.stderr.startswith(message) and run.stderr.count("\n") == 1, run.stderr


def test_help():
    run = lstm_fast("bench", "--help")
    assert run.returncode == 0 and "usage: lstm-fast bench" in run.stdout


def test_model_file(tmp_path):
    from lstm_fast import Model

    path = tmp_path / "m.lfm"
    Model(parse_spec("rnn:I=2,H=3,act=relu/dense:O=1")).save(path)
    run = lstm_fast("bench", str(path), "--mode", "sequence", "--steps", "5", "--lengths",
                    "5", *FAST, "--no-peak")
    assert run.returncode == 0, run.stderr
    assert f"model: {path}: rnn 2->3 / dense 3->1" in run.stdout


# -- --compare through a fake lstm_fast.peers, in-process -------------------------------------


class _FakePeer:
    """A peer that runs lstm_fast itself, optionally with its output shifted."""

    def __init__(self, name, spec, shift=0.0):
        from lstm_fast import Model

        self.name, self.version, self.shift = name, "9.9", shift
        self.model = Model(spec)

    def predict(self, x, lengths=None):
        return self.model.predict(x, lengths=lengths) + self.shift

    def stream(self, batch):
        s = self.model.stream(batch)
        return types.SimpleNamespace(step=lambda x: s.step(x) + self.shift,
                                     run=lambda x: s.run(x) + self.shift)


def _fake_peers(monkeypatch):
    def build_peer(name, spec, *, threads=1):
        assert threads == 1
        if name == "onnxruntime":
            raise FrameworkUnavailable("onnxruntime is not installed (fake)")
        return _FakePeer(name, spec, shift=0.5 if name == "keras" else 0.0)

    monkeypatch.setitem(sys.modules, "lstm_fast.peers",
                        types.SimpleNamespace(build_peer=build_peer))


@pytest.mark.parametrize("mode", ["step", "chunk", "sequence"])
def test_compare_table_ratios_skips_and_mismatch(monkeypatch, capsys, tmp_path, mode):
    _fake_peers(monkeypatch)
    path = tmp_path / "b.json"
    code = bench.main(["--spec", "gru:I=3,H=4", "--mode", mode, "--chunk", "3", "--steps", "6",
                       "--batch", "2", *FAST, "--no-peak", "--compare",
                       "torch,onnxruntime,keras", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 1  # keras's output differs: reported, not timed, exit 1
    assert "vs lstm_fast" in out and "torch 9.9" in out
    assert "skipped: onnxruntime: onnxruntime is not installed (fake)" in out
    assert "mismatch: keras 9.9: output differs from lstm_fast by 0.5" in out
    engines = {e["name"]: e for e in json.loads(path.read_text())["engines"]}
    assert [engines[n]["status"] for n in ("lstm_fast", "torch", "onnxruntime", "keras")] == \
        ["ok", "ok", "skipped", "mismatch"]
    assert engines["torch"]["max_abs_diff"] == 0.0
    assert engines["torch"]["stats"]["calls"] == 30
    assert engines["torch"]["stats"]["ratio_vs_lstm_fast"] > 0
    assert engines["keras"]["stats"] is None and engines["keras"]["latencies_us"] == []


def test_compare_without_peers_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lstm_fast.peers", None)  # import fails
    code = bench.main(["--spec", TINY, *FAST, "--no-peak", "--compare", "torch"])
    assert code == 0
    assert "skipped: torch: lstm_fast.peers cannot be imported" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("lstm_fast.peers") is None
                    or importlib.util.find_spec("torch") is None,
                    reason="needs lstm_fast.peers and torch")
def test_compare_with_real_torch():
    run = lstm_fast("bench", "--spec", "lstm:I=4,H=8/dense:O=2", *FAST, "--no-peak",
                    "--compare", "torch")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "torch 2." in run.stdout and "x\n" in run.stdout


# -- --spec and FLOP counting -------------------------------------------------------------------


def test_spec_grammar():
    spec = parse_spec("emb:V=100,D=8;bilstm:H=6,L=2,merge=sum / gru:H=5,last=1/"
                      "dense:O=3,act=softmax,bias=0", seed=3)
    kinds = [L.kind for L in spec.layers]
    assert kinds == ["embedding", "bidirectional", "bidirectional", "gru", "dense"]
    assert spec.layers[2].input_size == 6 and spec.output_size == 3
    assert not spec.returns_sequences and spec.layers[-1].bias is None
    w = spec.layers[3].w_hh
    assert np.abs(w).max() <= 1 / np.sqrt(5) and np.abs(w).max() > 0.3
    again = parse_spec("emb:V=100,D=8;bilstm:H=6,L=2,merge=sum / gru:H=5,last=1/"
                       "dense:O=3,act=softmax,bias=0", seed=3)
    assert np.array_equal(again.layers[3].w_hh, w)
    proj = parse_spec("lstm:I=4,H=8,P=3").layers[0]
    assert proj.output_size == 3 and proj.w_hr.shape == (3, 8)
    assert parse_spec("rnn:I=1,H=32,act=relu").layers[0].activation == "relu"
    with pytest.raises(ValueError, match="at most"):
        parse_spec("lstm:I=100000,H=100000,L=10")


def test_flop_counts():
    per_step, once = bench.flop_counts(parse_spec("lstm:I=4,H=8,L=2/dense:O=3"))
    assert (per_step, once) == (2 * (32 * 4 + 32 * 8 + 32 * 8 + 32 * 8 + 3 * 8), 0)
    per_step, once = bench.flop_counts(parse_spec("gru:I=4,H=8,last=1/dense:O=3"))
    assert (per_step, once) == (2 * (24 * 4 + 24 * 8), 2 * 24)


# -- quantized weights (issue 13) and the sgemm peak of the ISA in use (issue 14) ---------------


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("onnxruntime") is None,
                    reason="needs torch and onnxruntime")
def test_quantized_compare_reports_error_bytes_and_gbs(tmp_path):
    path = tmp_path / "q.json"
    run = lstm_fast("bench", "--spec", "lstm:I=4,H=8/dense:O=2", "--weights", "int8", *FAST,
                    "--no-peak", "--compare", "torch,torch[int8],ort[int8-per-channel]",
                    "--json", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "lstm_fast runs it with int8 weights" in out
    assert "weights int8: max abs error vs the fp32 model" in out and "500-step stream" in out
    for column in ("weights", "max err vs fp32", "bytes/step", "GB/s"):
        assert column in out, column
    doc = json.loads(path.read_text())
    assert doc["config"]["weights"] == "int8"
    engines = {e["name"]: e for e in doc["engines"]}
    assert [engines[n]["weights"] for n in engines] == ["int8", "fp32", "int8", "int8"]
    for name in ("lstm_fast", "torch[int8]", "onnxruntime[int8-per-channel]"):
        e = engines[name]
        assert e["status"] == "ok" and 0 < e["max_abs_diff"] < 0.5, e
        assert e["stats"]["bytes_per_step"] == e["bytes_per_step"] > 0
        assert e["stats"]["weight_gb_per_s"] > 0
    assert engines["torch"]["max_abs_diff"] < 1e-4  # the float32 peer is still checked
    assert engines["lstm_fast"]["bytes_per_step"] < engines["torch"]["bytes_per_step"]


def test_quantized_peer_on_a_model_it_cannot_quantize_is_skipped():
    pytest.importorskip("onnxruntime")
    run = lstm_fast("bench", "--spec", "gru:I=4,H=8", *FAST, "--no-peak", "--compare",
                    "ort[int8]")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped: onnxruntime[int8]: onnxruntime[int8]: quantize_dynamic quantizes only " \
           "LSTM" in run.stdout


def test_weights_fp16_without_compare():
    run = lstm_fast("bench", "--spec", "gru:I=4,H=8", "--weights", "fp16", "--mode", "chunk",
                    "--chunk", "50", *FAST, "--no-peak")
    assert run.returncode == 0, run.stderr
    assert "weights fp16: max abs error vs the fp32 model" in run.stdout
    assert "a 500-step stream of batch 1" in run.stdout


@pytest.mark.skipif(__import__("lstm_fast").blas_info()["best_isa"] not in ("avx2", "avx512"),
                    reason="needs an AVX2 CPU")
def test_sgemm_peak_of_the_isa_in_use_runs_the_matching_openblas_core(monkeypatch):
    from lstm_fast.bench import timing

    child = timing._child_peak
    gflops, core = timing.isa_sgemm_peak("avx2", size=64)
    assert core == "Haswell" and gflops > 0
    monkeypatch.setattr(timing, "_child_peak", lambda *a: pytest.fail("not cached"))
    monkeypatch.setattr(timing, "sgemm_peak", lambda *a: pytest.fail("not cached"))
    assert timing.isa_sgemm_peak("avx2", size=64) == (gflops, core)
    # the child process itself: OpenBLAS loaded with the core type asked for
    assert child("Haswell", 1, 64) > 0
    with pytest.raises(RuntimeError, match="OPENBLAS_CORETYPE=NoSuchCore"):
        child("NoSuchCore", 1, 64)


def test_bench_header_names_the_peak_core_of_the_isa():
    run = lstm_fast("bench", "--spec", TINY, *FAST, "--isa", "avx2")
    if run.returncode == 2 and "avx2" in run.stderr:
        pytest.skip("this CPU cannot run the avx2 level")
    assert run.returncode == 0, run.stderr
    assert "OpenBLAS core Haswell, the sgemm of isa avx2" in run.stdout


def test_int8_model_file_runs_as_stored_against_its_float32_values(tmp_path):
    pytest.importorskip("torch")
    import lstm_fast as lf

    path = tmp_path / "q.lfm"
    lf.Model(parse_spec("lstm:I=4,H=8", seed=1)).quantize("int8", measure_steps=0).save(path)
    out = tmp_path / "q.json"
    run = lstm_fast("bench", str(path), *FAST, "--no-peak", "--compare", "torch",
                    "--json", str(out))
    assert run.returncode == 0, run.stdout + run.stderr  # torch runs the same float values
    engines = {e["name"]: e for e in json.loads(out.read_text())["engines"]}
    assert engines["lstm_fast"]["weights"] == "int8" and engines["torch"]["weights"] == "fp32"
    assert 0 < engines["lstm_fast"]["max_abs_diff"] < 0.5
    assert engines["torch"]["max_abs_diff"] < 1e-4
    run = lstm_fast("bench", str(path), "--weights", "fp32", *FAST, "--no-peak")
    assert run.returncode == 0 and "weights int8" not in run.stdout, run.stdout + run.stderr


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("onnxruntime") is None,
                    reason="needs torch and onnxruntime")
def test_compare_py_quantized_row(tmp_path):
    """benches/compare.py's int8 row: lstm_fast int8, its fp32 model and the peers' int8
    variants, each one's error vs the fp32 model and bytes per step (a smoke run)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "c.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    run = subprocess.run([sys.executable, os.path.join(root, "benches", "compare.py"), "--quick",
                          "--budget", "0.02", "--only", "int8_step_64_128", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Quantized weights: median time per call" in run.stdout
    row = json.loads(out.read_text())["workloads"]["int8_step_64_128"]
    assert row["weights"] == "int8" and row["agrees"]
    v = row["variants"]
    assert set(v) == {"lstm_fast", "lstm_fast_fp32", "torch[int8]", "torch[int8-per-channel]",
                      "onnxruntime[int8]", "onnxruntime[int8-per-channel]"}
    assert v["lstm_fast_fp32"]["weights"] == "fp32"
    for name, e in v.items():
        assert e["status"] == "ok" and e["median_ns"] > 0, name
        if name != "lstm_fast_fp32":
            assert e["weights"] == "int8" and 0 < e["max_abs_diff_vs_lstm_fast"] < 0.5, name
    assert v["lstm_fast"]["bytes_per_step"] < v["lstm_fast_fp32"]["bytes_per_step"] / 3


# -- several threads: every engine in a process of its own (lstm_fast.bench.isolated) ----------


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_two_threads_time_each_engine_in_its_own_process(tmp_path):
    path = tmp_path / "t.json"
    run = lstm_fast("bench", "--spec", "lstm:I=4,H=8/dense:O=2", *FAST, "--no-peak",
                    "--threads", "2", "--compare", "torch,torch[int8]", "--json", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 threads for every engine" in run.stdout
    doc = json.loads(path.read_text())
    engines = {e["name"]: e for e in doc["engines"]}
    assert [engines[n]["status"] for n in ("lstm_fast", "torch", "torch[int8]")] == ["ok"] * 3
    assert engines["torch"]["max_abs_diff"] < 1e-4 and engines["torch"]["version"]  # checked
    assert 0 < engines["torch[int8]"]["max_abs_diff"] < 0.5
    assert engines["torch[int8]"]["weights"] == "int8"
    for e in engines.values():
        assert e["stats"]["calls"] == 30 and e["stats"]["p50_us"] > 0


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("onnxruntime") is None,
                    reason="needs torch and onnxruntime")
def test_compare_py_two_threads(tmp_path):
    """benches/compare.py --threads 2: every variant timed (in its own process), checked."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "c.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    run = subprocess.run([sys.executable, os.path.join(root, "benches", "compare.py"), "--quick",
                          "--budget", "0.02", "--threads", "2", "--only", "step_64_128",
                          "--json", str(out)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 thread(s) for every engine" in run.stdout
    row = json.loads(out.read_text())["workloads"]["step_64_128"]
    assert row["agrees"]
    for name, e in row["variants"].items():
        assert e["status"] == "ok" and e["median_ns"] > 0, name
        if name != "lstm_fast":
            assert e["max_abs_diff_vs_lstm_fast"] < 1e-4, name
