"""Issue 11: misuse of the public API raises typed errors that state the accepted range and
are also ValueError / TypeError, so generic handlers keep working."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.converters.keras import spec_from_keras_file
from lstm_fast.converters.torch import spec_from_torch_file
from tests.fuzz.runner import worker_env
from tests.fuzz.seeds import FIXTURES
from tests.reference import random_layers


@pytest.fixture
def model(rng: np.random.Generator) -> lf.Model:
    return lf.Model.from_lstm_weights(random_layers(rng, 6, 10, 1))


@pytest.mark.parametrize("batch", [2**31, 2**24 + 1, True, False, np.True_, None, 1.0])
def test_stream_batch_out_of_range_or_not_an_int(model: lf.Model, batch: object) -> None:
    with pytest.raises(lf.ShapeError, match=r"positive integer \(1 to 16777216\)"):
        model.stream(batch)  # type: ignore[arg-type]


def test_stream_largest_batch_is_accepted(model: lf.Model) -> None:
    assert model.stream(np.int64(3)).batch == 3


def test_predict_batch_beyond_the_engine(model: lf.Model) -> None:
    x = np.broadcast_to(np.zeros(6, np.float32), (2**31, 0, 6))  # no memory behind it
    with pytest.raises(lf.ShapeError, match=r"1 <= B <= 16777216"):
        model.predict(x)


@pytest.mark.parametrize("isa, error, text", [
    ("sse9", lf.ArgumentError, "isa must be auto, avx512, avx2 or portable, got 'sse9'"),
    ("", lf.ArgumentError, "isa must be"),
    (3, lf.ArgumentTypeError, "isa must be a str"),
    (["avx2"], lf.ArgumentTypeError, "isa must be a str"),
])
def test_bad_isa(rng: np.random.Generator, isa: object, error: type, text: str) -> None:
    spec = lf.Model.from_lstm_weights(random_layers(rng, 3, 4, 1)).spec
    with pytest.raises(error, match=text) as e:
        lf.Model(spec, isa=isa)  # type: ignore[arg-type]
    assert isinstance(e.value, lf.LstmFastError) and isinstance(e.value, ValueError)
    assert isinstance(e.value, TypeError) == (error is lf.ArgumentTypeError)


def test_bad_isa_from_the_environment(rng: np.random.Generator,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spec = lf.Model.from_lstm_weights(random_layers(rng, 3, 4, 1)).spec
    monkeypatch.setenv("LSTM_FAST_ISA", "neon")
    with pytest.raises(lf.ArgumentError, match="LSTM_FAST_ISA must be"):
        lf.Model(spec)
    assert lf.Model(spec, isa="portable").isa == "portable"  # an explicit isa wins


def test_model_needs_a_spec() -> None:
    with pytest.raises(lf.ArgumentTypeError, match="spec must be a ModelSpec"):
        lf.Model({"layers": []})  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, -1, 10**6, lf.MAX_THREADS + 1])
def test_set_num_threads_range(n: int) -> None:
    before = lf.get_num_threads()
    with pytest.raises(lf.ArgumentError, match=r"1 to 1024 threads, got "):
        lf.set_num_threads(n)
    assert lf.get_num_threads() == before


@pytest.mark.parametrize("n", [True, 2.0, "2", None])
def test_set_num_threads_type(n: object) -> None:
    with pytest.raises(lf.ArgumentTypeError, match="an integer from 1 to 1024"):
        lf.set_num_threads(n)  # type: ignore[arg-type]


def test_set_num_threads_accepts_the_range() -> None:
    try:
        lf.set_num_threads(np.int32(lf.MAX_THREADS))
        assert lf.get_num_threads() == lf.MAX_THREADS
    finally:
        lf.set_num_threads(1)


@pytest.mark.parametrize("value, applied", [("0", "1"), ("-2", "1"), ("abc", "1"),
                                            ("5000", "1"), ("3", "3")])
def test_thread_count_from_the_environment(value: str, applied: str) -> None:
    """A bad LSTM_FAST_NUM_THREADS never breaks ``import lstm_fast``: it is ignored with a
    warning."""
    code = "import lstm_fast as lf; print(lf.get_num_threads())"
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                          text=True, env=worker_env({"LSTM_FAST_NUM_THREADS": value}),
                          timeout=60, check=True)
    assert done.stdout.strip() == applied
    assert ("ignored" in done.stderr) == (applied != value)


def test_ragged_inputs(model: lf.Model) -> None:
    with pytest.raises(lf.ShapeError, match="not a rectangular array"):
        model.predict([[[0.0] * 6], [[0.0] * 5]])
    s = model.stream(2)
    with pytest.raises(lf.InputError, match="list of integers"):
        s.reset([[0], [0, 1]])
    with pytest.raises(lf.ShapeError, match="not a rectangular array"):
        model.predict(np.zeros((2, 3, 6), np.float32), lengths=[[1], [1, 2]])


def test_converter_arguments() -> None:
    pt = FIXTURES / "torch" / "classifier.pt"
    with pytest.raises(lf.ArgumentError, match="head must be"):
        spec_from_torch_file(pt, head="middle")
    keras = FIXTURES / "keras" / "stateful.keras"
    with pytest.raises(lf.ArgumentTypeError, match="config must be a dict"):
        spec_from_keras_file(keras, config=3)
    with pytest.raises(lf.ArgumentTypeError, match="keras_version must be a str"):
        spec_from_keras_file(keras, keras_version=3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        spec_from_keras_file(FIXTURES / "keras" / "absent.keras")
    with pytest.raises(FileNotFoundError):
        spec_from_torch_file(FIXTURES / "torch" / "absent.pt")
