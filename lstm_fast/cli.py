"""The ``lstm-fast`` command line: convert, quantize, info, run, verify, demo, bench."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

from .converters.source import identify
from .errors import LstmFastError
from .source_options import add_source_options as _add_source_options
from .source_options import convert_source as _convert_source
from .source_options import torch_options as _torch_options
from .spec import WEIGHT_DTYPES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lstm-fast",
                                description="Fast CPU inference for recurrent networks.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("convert", help="convert a Keras or PyTorch checkpoint",
                       description="Convert a Keras (.keras, .h5) or PyTorch (.pt/.pth state "
                                   "dict or training checkpoint, TorchScript, .safetensors) "
                                   "checkpoint into an lstm_fast model file. No pickle code "
                                   "is executed and neither framework is needed; when the "
                                   "source framework is installed, both run on random input "
                                   "and the difference is printed.")
    c.add_argument("source", help="checkpoint to convert")
    c.add_argument("-o", "--output", required=True, help="model file to write")
    _add_source_options(c)
    c.add_argument("--no-verify", action="store_true",
                   help="do not compare with the source framework")
    c.add_argument("--steps", type=int, default=64, help="steps of the random check input")
    c.add_argument("--weights", choices=WEIGHT_DTYPES, default="fp32",
                   help="storage type of the weight matrices (default fp32); see "
                        "`lstm-fast quantize`")

    q = sub.add_parser("quantize", help="store a model file's weights as fp16, bf16 or int8",
                       description="Round every weight matrix of a model file to fp16, bf16 "
                                   "or int8 with one scale per output row "
                                   "(biases, state and gate math stay float32), measure the "
                                   "max abs output error against the input model on a "
                                   "500-step random input, and write both to OUT.")
    q.add_argument("model", help="lstm_fast model file (.lfm)")
    q.add_argument("-o", "--output", required=True, help="model file to write")
    q.add_argument("--weights", choices=WEIGHT_DTYPES, required=True,
                   help="storage type of the weight matrices")

    i = sub.add_parser("info", help="describe a model file",
                       description="Print a model file's layers, shapes, parameter count, "
                                   "bytes, dtype, format version and provenance.")
    i.add_argument("model")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    r = sub.add_parser("run", help="batch inference from .npy files",
                       description="Run a model on inputs from a .npy file: (B, T, I) floats, "
                                   "or (B, T) integer ids for models that start with an "
                                   "Embedding. Writes the outputs to a .npy file.")
    r.add_argument("model")
    r.add_argument("--input", required=True, help="input .npy file")
    r.add_argument("--lengths", help="valid steps per sequence: a .npy file or a comma list")
    r.add_argument("--output", required=True, help="output .npy file")
    r.add_argument("--batch-size", type=int,
                   help="stream the input in batches of this many sequences: the input is "
                        "memory-mapped, the output written batch by batch (files bigger than "
                        "memory), with a progress bar on stderr and a progress file for "
                        "--resume")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted --batch-size run of the same job (default "
                        "batch size 256)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    v = sub.add_parser("verify", help="compare a model file with its source checkpoint",
                       description="Run a converted model and its source framework on the same "
                                   "input (random, or --input) and compare. Exit code 1 when "
                                   "the max abs difference exceeds --tolerance, 3 when the "
                                   "source framework cannot run.")
    v.add_argument("model")
    v.add_argument("--against", required=True, help="the source checkpoint")
    _add_source_options(v)
    v.add_argument("--input", help="input .npy file (default: random)")
    v.add_argument("--lengths", help="valid steps per sequence: a .npy file or a comma list")
    v.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference (1e-4)")
    v.add_argument("--steps", type=int, default=500, help="steps of the random input (500)")
    v.add_argument("--batch", type=int, default=2, help="batch of the random input (2)")

    d = sub.add_parser("demo", help="generate text with the bundled character-level LSTM",
                       description="Run the bundled character-level LSTM: it writes text one "
                                   "character at a time through a stateful stream and reports "
                                   "the latency per step.")
    d.add_argument("--chars", type=int, default=400, help="characters to generate (default 400)")
    d.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature; 0 = greedy (default)")
    d.add_argument("--seed", type=int, default=0, help="random seed for sampling")

    from .bench.command import add_parser as add_bench_parser

    add_bench_parser(sub)
    return p


def _load_lengths(value: str | None) -> np.ndarray | None:
    if value is None:
        return None
    if value.endswith(".npy"):
        return _load_input(value)
    try:
        return np.array([int(v) for v in value.split(",")])
    except ValueError:
        raise ValueError(f"--lengths must be a .npy file or comma-separated integers, got "
                         f"{value!r}") from None


def _compare(y: np.ndarray, source: str, kind: str, x: np.ndarray,
             lengths: np.ndarray | None, config: str | None,
             torch_options: dict[str, Any]) -> float | None:
    """Max abs difference with the framework, or None (reason printed) when it cannot run."""
    from .verify import FrameworkUnavailable, framework_output

    try:
        ref = framework_output(source, kind, x, lengths, config=config,
                               torch_options=torch_options)
    except FrameworkUnavailable as e:
        print(f"comparison with {kind} skipped: {e}")
        return None
    if ref.shape != y.shape:
        raise LstmFastError(f"output shapes differ: lstm_fast {y.shape}, {kind} {ref.shape}")
    return float(np.max(np.abs(y.astype(np.float64) - ref))) if y.size else 0.0


def _cmd_convert(args: argparse.Namespace) -> int:
    from . import load
    from .format import save_spec
    from .sample_input import random_input

    spec, kind = _convert_source(args, args.source)
    if args.weights != "fp32":
        from .model import Model

        spec = Model(spec).quantize(args.weights).spec
    save_spec(spec, args.output)
    print(f"converted {args.source} ({kind}) -> {args.output}")
    print(spec.summary())
    for note in ("folded", "ignored"):
        if note in spec.metadata:
            print(f"{note}: {spec.metadata[note]}" if note == "folded"
                  else spec.metadata[note])
    if args.no_verify:
        return 0
    model = load(args.output)  # check the file just written, not the spec in memory
    x = random_input(model.spec, 2, max(1, args.steps))
    y = model.predict(x)
    diff = _compare(y, args.source, kind, x, None, args.config, _torch_options(args))
    if diff is not None:
        print(f"max abs difference vs {kind} on random input {x.shape}: {diff:.3g}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from . import load

    model = load(args.model).quantize(args.weights)
    model.save(args.output)
    print(f"quantized {args.model} -> {args.output}: {args.weights} weights, "
          f"max abs output error {model.spec.quant_error:.3g} (500-step random input)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .format import format_version, load_spec
    from .quantize import weight_bytes

    spec = load_spec(args.model)
    info = {"file": args.model, "bytes": os.path.getsize(args.model),
            "format_version": format_version(spec), "dtype": spec.weights_dtype,
            "weight_bytes": weight_bytes(spec), "quant_error": spec.quant_error,
            "parameters": spec.num_parameters(), "input": _input_text(spec),
            "output": _output_text(spec), "mask_semantics": spec.mask_semantics,
            "stateful": spec.stateful, "metadata": spec.metadata}
    if args.json:
        info["layers"] = [{"kind": L.kind, "input_size": L.input_size,
                           "output_size": L.output_size, "options": L.options()}
                          for L in spec.layers]
        print(json.dumps(info, indent=2))
        return 0
    print(spec.summary())
    for key, value in info.items():
        if key != "metadata":
            print(f"{key}: {value}")
    for key, value in spec.metadata.items():
        print(f"source {key}: {value}")
    return 0


def _input_text(spec: Any) -> str:
    return "(B, T) int ids" if spec.takes_ids else f"(B, T, {spec.input_size}) float32"


def _output_text(spec: Any) -> str:
    t = ", T" if spec.returns_sequences else ""
    return f"(B{t}, {spec.output_size}) float32"


def _load_input(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except EOFError:
        raise ValueError(f"{path}: empty or truncated .npy file") from None


def _cmd_run(args: argparse.Namespace) -> int:
    from . import load

    if args.batch_size is not None or args.resume:
        return _cmd_run_batches(args)
    model = load(args.model)
    x = _load_input(args.input)
    t0 = time.perf_counter()
    y = model.predict(x, lengths=_load_lengths(args.lengths))
    ms = (time.perf_counter() - t0) * 1e3
    np.save(args.output, y)
    print(f"{args.input} {x.shape} -> {args.output} {y.shape} in {ms:.2f} ms")
    return 0


def _cmd_run_batches(args: argparse.Namespace) -> int:
    from .batch_run import INTERRUPTED, score_file

    size = 256 if args.batch_size is None else args.batch_size
    stats = score_file(args.model, args.input, args.output, size,
                       lengths=_load_lengths(args.lengths), resume=args.resume,
                       progress=None if args.no_progress else sys.stderr)
    if stats.interrupted:
        return INTERRUPTED
    print(f"{args.input} {stats.input_shape} -> {args.output} {stats.output_shape}: "
          f"{stats.sequences - stats.resumed_from:,} sequences in {stats.seconds:.2f} s "
          f"({stats.rate:,.0f} seq/s)"
          + (f", resumed after {stats.resumed_from:,}" if stats.resumed_from else ""))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from . import load
    from .sample_input import random_input

    model = load(args.model)
    kind = args.framework or identify(args.against).framework
    x = (_load_input(args.input) if args.input
         else random_input(model.spec, max(1, args.batch), max(1, args.steps)))
    lengths = _load_lengths(args.lengths)
    y = model.predict(x, lengths=lengths)
    recorded = json.loads(model.spec.metadata.get("torch_options", "null"))
    diff = _compare(y, args.against, kind, x, lengths, args.config,
                    _torch_options(args, recorded if isinstance(recorded, dict) else None))
    if diff is None:
        return 3
    ok = diff <= args.tolerance
    print(f"max abs difference vs {kind} on input {x.shape}: {diff:.3g} "
          f"({'within' if ok else 'OVER'} tolerance {args.tolerance:g})")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "convert":
            return _cmd_convert(args)
        if args.command == "info":
            return _cmd_info(args)
        if args.command == "quantize":
            return _cmd_quantize(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "verify":
            return _cmd_verify(args)
        if args.command == "bench":
            from .bench.command import run as run_bench

            return run_bench(args)
        if args.chars < 1:
            raise ValueError("--chars must be at least 1")
        from .demo import run_demo

        run_demo(args.chars, args.temperature, args.seed)
        return 0
    except (LstmFastError, ValueError, OSError) as e:
        print(f"lstm-fast: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstm-fast: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get("LSTM_FAST_DEBUG"):
            raise
        print(f"lstm-fast: internal error ({type(e).__name__}: {_one_line(e)}); please report "
              f"it (LSTM_FAST_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70


def _one_line(e: BaseException, limit: int = 2000) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


if __name__ == "__main__":
    sys.exit(main())
