"""``lstm-fast bench``: latency and throughput of a model, optionally against other frameworks.

The model is a model file (``lstm-fast bench model.lfm``), a synthetic model with random
weights (``--spec "lstm:I=128,H=256,L=2"``, see :mod:`lstm_fast.bench_spec`) or a Keras /
PyTorch checkpoint converted on the fly (``--source ckpt.pt``). Three modes:

``step``
    one frame per call through ``model.stream(B).step``, the state carried (streaming apps);
``chunk``
    ``--chunk T`` frames per call through ``stream.run``, the state carried;
``sequence``
    whole sequences of ``--steps T`` frames through ``model.predict(x, lengths=...)``, with
    ``--lengths`` for ragged (right-padded) batches.

Every call is timed alone with :func:`time.perf_counter_ns` after ``--warmup`` untimed calls,
with the garbage collector off, for ``--seconds`` of measured time per engine or ``--iters``
calls per engine. With ``--compare torch,onnxruntime,keras`` the same model (same weights, same
inputs, same thread count) runs in each framework through :mod:`lstm_fast.peers`; each peer's
output must equal lstm_fast's within 1e-4 before it is timed, and the engines take turns
round by round (A, B, C, B, C, A, ...) so that machine noise hits them alike. With
``--threads`` above 1 each engine is built, checked and timed in a process of its own, one
running at a time (:mod:`lstm_fast.bench.isolated`), so that no engine's worker threads take
another's cores. Frameworks that are missing or cannot run the model are listed as skipped.

Quantized weights: ``--weights fp16|bf16|int8`` runs lstm_fast on ``Model.quantize(...)`` of
the model, and a peer's quantized variant is named in brackets: ``torch[int8]`` (qint8, one
scale per matrix), ``torch[int8-per-channel]`` (qint8, one scale per output row),
``torch[fp16]`` (torch ``quantize_dynamic`` on LSTM/GRU/Linear; no RNN),
``onnxruntime[int8]`` and ``onnxruntime[int8-per-channel]`` (ONNX Runtime ``quantize_dynamic``,
DynamicQuantizeLSTM; LSTM models only). Quantized engines are not held to 1e-4: the table adds
their weights type, their max abs error against the fp32 model's outputs (over a 500-step
stream in step and chunk modes, the timed inputs), the bytes of weights one step reads
(:mod:`lstm_fast.bench.traffic`) and, at batch 1, the achieved GB/s of that weight traffic
(bytes per step / time per step).

FLOP counts are 2 x the multiply-adds of every weight matrix per time step (valid steps only
under ``--lengths``; layers after a last-step-only layer once per sequence); GFLOP/s is the
FLOP per call over the median latency, also shown as a fraction of the single sgemm
(1024 x 1024 x 1024, at the bench thread count) measured at startup with the OpenBLAS kernels
of the instruction set in use (core type SkylakeX for isa avx512, Haswell for avx2, measured in
a child process when it is not the core type loaded; see
:func:`lstm_fast.bench.timing.isa_sgemm_peak`), so the fraction means the same on every
machine.

JSON output (``--json PATH``), schema ``"lstm_fast.bench/1"``::

    {
      "schema": "lstm_fast.bench/1",
      "config": {"model": str|null, "spec": str|null, "source": str|null, "mode": str,
                 "batch": int, "frames_per_call": int, "steps": int, "chunk": int,
                 "lengths": [int]|null, "threads": int, "warmup": int,
                 "seconds": float|null, "iters": int|null, "frame_rate": float|null,
                 "seed": int, "isa": str, "compare": [str], "weights": str},
      "environment": {"lstm_fast": str, "isa": str, "blas": str, "blas_core": str,
                      "sgemm_core": str (the peak's core type; absent without a peak),
                      "best_isa": str, "fma_width": int, "threads": int, "cpu": str,
                      "logical_cores": int, "python": str, "numpy": str, "platform": str},
      "model": {"description": str, "layers": [{"kind", "input_size", "output_size"}],
                "parameters": int, "takes_ids": bool, "flop_per_step": int,
                "flop_per_call": int},
      "peak": {"sgemm_gflops": float, "core": str, "size": 1024, "threads": int} | null,
      "engines": [{"name": str, "version": str,
                   "status": "ok"|"skipped"|"mismatch"|"failed", "reason": str|null,
                   "max_abs_diff": float|null (vs the fp32 model's outputs),
                   "weights": "fp32"|"fp16"|"bf16"|"int8", "bytes_per_step": int|null,
                   "stats": {"calls", "total_s", "min_us", "mean_us", "p50_us", "p90_us",
                             "p99_us", "max_us", "us_per_step", "frames_per_s",
                             "sequences_per_s" (sequence mode, else null), "gflops",
                             "peak_fraction" (null without a peak), "rtf", "rtf_p99"
                             (null without --frame-rate or in sequence mode),
                             "bytes_per_step", "weight_gb_per_s" (batch 1, else null),
                             "ratio_vs_lstm_fast"} | null,
                   "latencies_us": [float]}],
      "noisy": bool
    }

Exit codes: 0; 1 when a peer's output differs from lstm_fast's or a peer fails; 2 for usage
errors (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import LstmFastError
from ..peers import PEER_NAMES, peer_class
from ..source_options import add_source_options, convert_source
from .engines import (
    MODES,
    Engine,
    Workload,
    build_peers,
    contender,
    is_quantized,
    make_workload,
    max_diff,
    outputs,
    parse_engine_names,
)
from .isolated import build_isolated, close
from .report import (
    NOISY,
    SCHEMA,
    describe,
    engine_stats,
    environment,
    header_lines,
    json_document,
    plot,
    require_matplotlib,
    result_lines,
)
from .timing import SETTLE_S, Contender, Progress, interleave, isa_sgemm_peak
from .traffic import lstm_fast_step_bytes

__all__ = ["add_parser", "main", "run"]

#: Turns the measurement is split into (engines take turns each round).
ROUNDS = 20
#: Per-engine cap on recorded calls in --seconds mode (memory bound).
MAX_CALLS = 5_000_000


# --------------------------------------------------------------------------------------------
# Command line


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the ``lstm-fast`` subparsers ``sub``."""
    b = sub.add_parser(
        "bench", help="time a model: latency percentiles, throughput, GFLOP/s",
        description="Time a model (a model file, a synthetic --spec model or a --source "
                    "checkpoint) step by step, chunk by chunk or on whole sequences: latency "
                    "per call (p50/p90/p99/max), us per time step, throughput, GFLOP/s and "
                    "its fraction of the measured sgemm peak, real-time factor. --compare runs "
                    "the same model in other frameworks. Exit code 1 when a compared engine's "
                    "output differs from lstm_fast's.",
        epilog='examples: lstm-fast bench --spec "lstm:I=128,H=256,L=2" --mode step; '
               "lstm-fast bench model.lfm --mode sequence --steps 200 --batch 16 "
               "--lengths random --compare torch,onnxruntime --json out.json --plot out.png")
    b.add_argument("model", nargs="?", help="model file (or use --spec / --source)")
    b.add_argument("--spec", help='synthetic model with random weights, e.g. '
                                  '"lstm:I=128,H=256,L=2", "gru:I=64,H=64", '
                                  '"emb:V=10000,D=128/bilstm:H=256,L=2,return_last=1/dense:O=2,'
                                  'act=softmax" (kinds lstm gru rnn bilstm bigru birnn dense '
                                  'emb; keys I H L P act return_last merge bias O V D)')
    b.add_argument("--source", help="a Keras or PyTorch checkpoint, converted for every engine")
    b.add_argument("--mode", choices=MODES, default="step",
                   help="step: one frame per call, state carried (default); chunk: --chunk "
                        "frames per call; sequence: whole sequences of --steps frames")
    b.add_argument("--batch", type=int, default=1, help="sequences per call (default 1)")
    b.add_argument("--chunk", type=int, default=16, help="frames per call in chunk mode (16)")
    b.add_argument("--steps", type=int, default=100,
                   help="frames per sequence in sequence mode (100)")
    b.add_argument("--lengths", help="sequence mode: valid steps per sequence, 'random' "
                                     "(uniform in [T/4, T]) or a comma list of --batch values")
    b.add_argument("--threads", type=int, default=1,
                   help="threads for every engine (default 1)")
    b.add_argument("--warmup", type=int, default=20, help="untimed calls per engine (20)")
    how_long = b.add_mutually_exclusive_group()
    how_long.add_argument("--seconds", type=float, default=3.0,
                          help="measured seconds per engine (default 3)")
    how_long.add_argument("--iters", type=int, help="timed calls per engine (instead of "
                                                    "--seconds)")
    b.add_argument("--frame-rate", type=float, metavar="HZ",
                   help="frames per second of the input: report the real-time factor")
    b.add_argument("--compare", metavar="ENGINES",
                   help="comma list of frameworks to run the same model in: "
                        + ", ".join(PEER_NAMES) + _variants_help())
    b.add_argument("--weights", choices=("fp32", "fp16", "bf16", "int8"),
                   help="run lstm_fast on the model quantized to these weights "
                        "(Model.quantize; default: as the model file stores them); with "
                        "quantized engines the table adds each one's max abs error vs the "
                        "fp32 model, bytes of weights per step and GB/s")
    b.add_argument("--isa", choices=("auto", "avx512", "avx2", "portable"),
                   help="lstm_fast kernel instruction set (default auto)")
    b.add_argument("--seed", type=int, default=0, help="seed of --spec weights and inputs")
    b.add_argument("--no-peak", action="store_true", help="do not measure the sgemm peak")
    b.add_argument("--json", metavar="PATH", help=f"write the results ({SCHEMA}) to PATH")
    b.add_argument("--plot", metavar="PATH.png",
                   help="draw the latency distributions (needs matplotlib: "
                        "pip install 'lstm_fast[plot]')")
    b.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
    add_source_options(b.add_argument_group("--source options"))
    return b


def _variants_help() -> str:
    """The peers' variants for ``--compare``'s help (none when the peers cannot be imported)."""
    try:
        classes = [peer_class(p) for p in PEER_NAMES]
    except ImportError:
        return ""
    other = ", ".join(f"{c.name}[{v}]" for c in classes for v in c.variants[1:])
    quantized = ", ".join(f"{c.name}[{v}]" for c in classes for v in c.quantized_variants)
    return (f"; a variant in brackets: {other}; quantized variants: {quantized} (int8: one "
            "scale per weight matrix, int8-per-channel: one per output row; torch quantizes "
            "LSTM and GRU, ONNX Runtime only LSTM)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lstm-fast bench`` in this process with ``argv`` (the arguments after ``bench``).

    Returns
    -------
    int
        The exit code: 0, 1 when a compared engine differs or fails, 2 for usage errors.
    """
    parser = argparse.ArgumentParser(prog="lstm-fast")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except (LstmFastError, ValueError, OSError) as e:
        print(f"lstm-fast: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------
# The command


def _parse_lengths(value: str | None, batch: int, steps: int, seed: int) -> np.ndarray | None:
    if value is None:
        return None
    if value.strip().lower() == "random":
        rng = np.random.default_rng(seed + 1)
        return rng.integers(max(1, steps // 4), steps + 1, batch).astype(np.int64)
    try:
        lengths = np.array([int(v) for v in value.split(",")], dtype=np.int64)
    except ValueError:
        raise ValueError(f"--lengths must be 'random' or comma-separated integers, got "
                         f"{value!r}") from None
    if lengths.shape != (batch,):
        raise ValueError(f"--lengths has {lengths.size} values but --batch is {batch}")
    if lengths.min() < 1 or lengths.max() > steps:
        raise ValueError(f"--lengths must be in [1, --steps={steps}], got {value}")
    return lengths


def _workload(spec: Any, args: argparse.Namespace, accuracy: bool) -> Workload:
    frames = {"step": 1, "chunk": args.chunk, "sequence": args.steps}[args.mode]
    lengths = (_parse_lengths(args.lengths, args.batch, args.steps, args.seed)
               if args.mode == "sequence" else None)
    if args.mode != "sequence" and args.lengths is not None:
        raise ValueError("--lengths applies to --mode sequence")
    return make_workload(spec, args.mode, args.batch, frames, lengths=lengths, seed=args.seed,
                         accuracy=accuracy)


def _check_args(args: argparse.Namespace) -> None:
    given = [n for n, v in (("MODEL", args.model), ("--spec", args.spec),
                            ("--source", args.source)) if v]
    if len(given) != 1:
        raise ValueError("give one of MODEL, --spec or --source" if not given
                         else f"give only one of {', '.join(given)}")
    for name in ("batch", "chunk", "steps", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    if args.warmup < 0:
        raise ValueError("--warmup must be at least 0")
    if args.iters is not None and args.iters < 1:
        raise ValueError("--iters must be at least 1")
    if not args.seconds > 0 or not math.isfinite(args.seconds):
        raise ValueError("--seconds must be positive")
    if args.frame_rate is not None and not (args.frame_rate > 0
                                            and math.isfinite(args.frame_rate)):
        raise ValueError("--frame-rate must be positive")


def _load_spec(args: argparse.Namespace) -> tuple[Any, str]:
    if args.spec:
        from ..bench_spec import parse_spec

        return parse_spec(args.spec, seed=args.seed), f"--spec {args.spec}"
    if args.source:
        spec, kind = convert_source(args, args.source)
        return spec, f"{args.source} ({kind})"
    from ..format import load_spec

    return load_spec(args.model), args.model


def run(args: argparse.Namespace) -> int:
    """Run the bench for parsed ``lstm-fast bench`` arguments; returns the exit code."""
    import lstm_fast as lf

    _check_args(args)
    names = parse_engine_names(args.compare)
    if args.plot:
        require_matplotlib()
    spec, origin = _load_spec(args)
    previous_threads = lf.get_num_threads()
    lf.set_num_threads(args.threads)
    try:
        model, fp32 = _models(spec, args)
        return _run(args, spec, origin, names, model, fp32)
    finally:
        lf.set_num_threads(previous_threads)


def _models(spec: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """The model lstm_fast runs (``--weights``, else as stored) and the fp32 model its outputs
    and every engine's are compared with (for a quantized file: the float32 values of its
    weights); sets ``args.weights`` to what lstm_fast runs."""
    from ..model import Model

    stored = Model(spec, isa=args.isa)
    fp32 = stored if spec.weights_dtype == "fp32" else stored.quantize("fp32", measure_steps=0)
    args.weights = args.weights or spec.weights_dtype
    if args.weights == "fp32":
        return fp32, fp32
    if args.weights == spec.weights_dtype:
        return stored, fp32
    return fp32.quantize(args.weights, measure_steps=0), fp32


def _measure(timed: list[Engine], args: argparse.Namespace, progress: Progress) -> None:
    """Warm up, then time the engines turn by turn (see :mod:`.timing`)."""
    cs: list[Contender] = [e.contender for e in timed]  # type: ignore[misc]
    for c in cs:
        c.warm_up(calls=args.warmup)
    iters = args.iters
    goal_ns = int(args.seconds * 1e9)

    def fraction(c: Contender) -> float:
        if iters:
            return len(c.times_ns) / iters
        return max(c.total_ns / goal_ns, len(c.times_ns) / MAX_CALLS)

    round_calls = max(1, math.ceil(iters / ROUNDS)) if iters else 0
    budget_ns = 0 if iters else int(min(0.25, max(0.005, args.seconds / ROUNDS)) * 1e9)
    settle = SETTLE_S if args.threads > 1 and len(cs) > 1 else 0.0

    def after_turn() -> None:
        done = sum(min(1.0, fraction(c)) for c in cs) / len(cs)
        progress.update(done, ", ".join(f"{c.name} {len(c.times_ns)}" for c in cs))

    try:
        interleave(cs, finished=lambda c: fraction(c) >= 1.0,
                   count=lambda c: min(round_calls, iters - len(c.times_ns)) if iters else 0,
                   budget_ns=budget_ns, settle_s=settle, after_turn=after_turn)
    finally:
        progress.close()


def _run(args: argparse.Namespace, spec: Any, origin: str, names: list[str],
         model: Any, fp32: Any) -> int:
    """Time ``model`` (``fp32`` itself, or its quantized copy) and the peers ``names``."""
    quantized = model is not fp32 or any(is_quantized(n) for n in names)
    wl = _workload(spec, args, accuracy=quantized)
    import lstm_fast as lf

    me = Engine("lstm_fast", lf.__version__, runner=model, weights=model.weights_dtype,
                bytes_per_step=lstm_fast_step_bytes(model))
    reference = outputs(fp32, wl)  # also fails early (stream of a bidirectional model)
    if model is not fp32:
        me.max_abs_diff = max_diff(reference, outputs(model, wl))
    env = environment(model.isa, args.threads)
    peak = None
    if not args.no_peak:
        try:
            peak, env["sgemm_core"] = isa_sgemm_peak(model.isa, args.threads)
        except RuntimeError as e:
            print(f"note: no sgemm peak ({e})")
    for line in header_lines(env, spec, args, wl, origin, peak):
        print(line)
    sys.stdout.flush()
    if args.threads > 1:  # each engine in a process of its own (see .isolated)
        engines = build_isolated([me], names, spec, wl, args.threads, reference)
    else:
        engines = [me, *build_peers(names, spec, wl, args.threads, reference)]
    timed = [e for e in engines if e.status == "ok"]
    try:
        for e in timed:
            if e.contender is None:
                e.contender = contender(e, wl)
        _measure(timed, args, Progress(args.progress or sys.stderr.isatty()))
    finally:
        close(engines)

    stats = {e.name: engine_stats(e, wl, peak, args.frame_rate) for e in timed}
    ref_p50 = stats[me.name]["p50_us"]  # the same number lstm_fast's own row shows
    for s in stats.values():
        s["ratio_vs_lstm_fast"] = s["p50_us"] / ref_p50 if ref_p50 else None
    print()
    for line in result_lines(engines, stats, wl, args, peak):
        print(line)
    noisy = any(s["p99_us"] > NOISY * s["p50_us"] for s in stats.values())
    if args.json:
        doc = json_document(args, spec, wl, names, env, peak, engines, stats, noisy)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.plot:
        title = (f"{describe(spec)} - {wl.mode}, batch {wl.batch}, "
                 f"{wl.frames_per_call} frame{'s' if wl.frames_per_call > 1 else ''}/call, "
                 f"{args.threads} thread{'s' if args.threads > 1 else ''}")
        plot(args.plot, timed, title)
        print(f"wrote {args.plot}")
    return 1 if any(e.status in ("mismatch", "failed") for e in engines) else 0
