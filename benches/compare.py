"""Compare lstm_fast with torch and ONNX Runtime on CPU (1 thread unless ``--threads``).

Usage::

    python benches/compare.py [--quick] [--only NAME[,NAME...]] [--threads N] [--json PATH]

Workloads (see ``bench_common.py``): a single LSTM layer (``step_*``, ``seq_*``)
and a single GRU layer (``gru_*``), both stepped with the state carried or run
on whole sequences; small LSTMs on chunks of 512 frames at batch 1 (``audio_*``,
``amp_1_32``: RTNeural's ground); 256 streams advanced one step per call
(``server_256``, to set against 256 calls of ``step_128_256``: the last column
gives the time per step and batch row); and a text classifier, Embedding -> 2-layer bidirectional
LSTM -> Linear on ``cat(h_n[-2], h_n[-1])``, timed from ids to logits with
fixed (``bilstm_cls_fixed``) or ragged (``bilstm_cls_ragged``: torch packs
the batch, ORT gets ``sequence_lens``, lstm_fast gets ``lengths``) lengths.

The engines are lstm_fast's bench stack: each workload's model (``bench_common.make_spec``)
is rebuilt in torch and ONNX Runtime by :mod:`lstm_fast.peers` (the ORT graphs with
``onnx.helper``), every engine gets the same weights and inputs, and each peer's output must
equal lstm_fast's within 1e-4 before it is timed (:mod:`lstm_fast.bench.engines`). Timing
(:mod:`lstm_fast.bench.timing`) interleaves the engines round by round so that machine noise
hits them alike; each turn times a batch of calls and records the time per call. The report
gives the median per call over all rounds, with p10 and p90. With ``--threads`` above 1 every
engine variant is built, checked and timed in a process of its own, the processes taking turns
(:mod:`lstm_fast.bench.isolated`): in one process the engines' worker threads (ORT's and
torch's spinning pools, lstm_fast's pool worker) took each other's cores.

Peers are measured at their best: torch with its default oneDNN (mkldnn) RNN path and with
mkldnn disabled, ONNX Runtime with ``run`` and with pre-bound ``io_binding``; the summary table
picks the faster variant of each and says which one it was.

Quantized rows (``int8_*``, ``fp16_*``: issue 13's speed table): lstm_fast runs the model
quantized (``Model.quantize``) next to its own float32 model (``lstm_fast_fp32``) and the peers'
quantized variants of the same type (torch ``quantize_dynamic`` qint8 per tensor / per channel
or float16; ONNX Runtime ``quantize_dynamic`` per tensor / per channel, LSTM only). Their
outputs are not held to 1e-4: every engine's max abs error against the float32 model over a
500-step stream (or the whole batch of sequences) is reported, with the bytes of weights one
step reads and, at batch 1, the GB/s of that weight traffic; a second summary table gives the
ratios.
"""

from __future__ import annotations

import os

# Single thread for everyone; must be set before numpy / torch / BLAS load.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from bench_common import (  # noqa: E402
    WORKLOADS,
    WORKLOADS_BY_NAME,
    AnyWorkload,
    ClassifierWorkload,
    make_classifier_inputs,
    make_input,
    make_spec,
)

import lstm_fast as lf  # noqa: E402
from lstm_fast.bench.engines import (  # noqa: E402
    ERROR_STEPS,
    TOLERANCE,
    Engine,
    build_peers,
    contender,
    make_workload,
    max_diff,
    outputs,
)
from lstm_fast.bench.isolated import build_isolated, close  # noqa: E402
from lstm_fast.bench.report import environment, fmt_bytes, format_table, format_time  # noqa: E402
from lstm_fast.bench.timing import interleave, percentiles  # noqa: E402
from lstm_fast.bench.traffic import lstm_fast_step_bytes  # noqa: E402
from lstm_fast.peers import peer_class  # noqa: E402

VERIFY_STEPS = 16
"""Number of consecutive frames checked for step workloads."""
PEERS = {"torch": "torch", "onnxruntime": "ORT"}
"""The compared frameworks and their column titles; every variant of each is timed."""
FP32 = "lstm_fast_fp32"
"""lstm_fast's float32 model, the baseline of a quantized row."""


def weights_of(w: AnyWorkload) -> str:
    """The weights lstm_fast runs on ``w`` (classifiers: fp32)."""
    return getattr(w, "weights", "fp32")


@dataclass(frozen=True)
class TimingConfig:
    """How much time to spend measuring: ``budget_s`` of interleaved rounds per workload (all
    variants together; at least ``min_rounds``, at most ``max_rounds``), at least ``warmup_s``
    of warm-up per variant, turns of about ``batch_ms``, and with more than one thread an idle
    pause of ``settle_ms`` before each turn (not timed; see :mod:`lstm_fast.bench.timing`)."""

    budget_s: float
    warmup_s: float
    batch_ms: float
    min_rounds: int
    max_rounds: int
    settle_ms: float = 30.0


DEFAULT_TIMING = TimingConfig(budget_s=2.5, warmup_s=0.1, batch_ms=5.0, min_rounds=3,
                              max_rounds=2000)
QUICK_TIMING = TimingConfig(budget_s=0.25, warmup_s=0.02, batch_ms=2.0, min_rounds=2,
                            max_rounds=2000)


def engines_for(w: AnyWorkload, threads: int, with_lstm_fast: bool) -> list[Engine]:
    """lstm_fast and every variant of every peer on ``w``, outputs checked; timed engines get
    a contender on one input (the last verified frame, or the whole batch).

    A quantized workload: lstm_fast on the quantized model, lstm_fast's float32 model
    (:data:`FP32`) and the peers' variants quantized to the same type; every engine's error
    against the float32 model is measured (over :data:`ERROR_STEPS` steps)."""
    spec = make_spec(w)
    weights = weights_of(w)
    if isinstance(w, ClassifierWorkload):
        x, lengths = make_classifier_inputs(w)
        wl = make_workload(spec, "sequence", w.batch, w.seq_len, lengths=lengths, x=x)
    elif w.mode == "step":
        steps = VERIFY_STEPS if weights == "fp32" else ERROR_STEPS
        x = make_input((w.batch, steps, w.input_size), w.seed + 1)
        wl = make_workload(spec, "step", w.batch, 1, x=x)
        wl.verify_calls = steps
    else:
        x = make_input((w.batch, w.seq_len, w.input_size), w.seed + 1)
        wl = make_workload(spec, "sequence", w.batch, w.seq_len, x=x)
    fp32 = lf.Model(spec)
    model = fp32 if weights == "fp32" else fp32.quantize(weights, measure_steps=0)
    me = Engine("lstm_fast", lf.__version__, runner=model, weights=weights,
                bytes_per_step=lstm_fast_step_bytes(model))
    reference = outputs(fp32, wl)
    engines = [me]
    if weights == "fp32":
        names = [f"{p}[{v}]" for p in PEERS for v in peer_class(p).variants]
    else:
        me.max_abs_diff = max_diff(reference, outputs(model, wl))
        engines.append(Engine(FP32, lf.__version__, runner=fp32, max_abs_diff=0.0,
                              bytes_per_step=lstm_fast_step_bytes(fp32)))
        names = [f"{p}[{v}]" for p in PEERS
                 for v, q in peer_class(p).quantized_variants.items() if q.dtype == weights]
    if not with_lstm_fast:
        me.status = "skipped"
    if threads > 1:  # each engine in a process of its own (lstm_fast.bench.isolated)
        local = [e for e in engines if e.status == "ok"]
        engines = [e for e in engines if e.status != "ok"]
        engines += build_isolated(local, names, spec, wl, threads, reference)
    else:
        engines += build_peers(names, spec, wl, threads, reference)
    wl.inputs = wl.inputs[-1:]  # time on one input, like a caller that refills one buffer
    try:
        for e in engines:
            if e.status == "ok":
                e.contender = contender(e, wl)
    except BaseException:
        close(engines)
        raise
    return engines


def family(e: Engine) -> str:
    return e.name.split("[")[0]  # "torch[no-mkldnn]" -> "torch"


def variant(e: Engine) -> str:
    return e.name.partition("[")[2].rstrip("]")


@dataclass
class Result:
    """One workload's engines after timing."""

    workload: AnyWorkload
    engines: list[Engine]
    calls_per_turn: dict[str, int]

    def median(self, e: Engine) -> float | None:
        return percentiles(e.latencies)[0] if e.latencies else None

    def best(self, fam: str) -> Engine | None:
        own = [e for e in self.engines if family(e) == fam and e.latencies]
        return min(own, key=self.median) if own else None  # type: ignore[arg-type,return-value]

    @property
    def agrees(self) -> bool:
        return all(e.status in ("ok", "skipped") for e in self.engines)

    def gbs(self, e: Engine) -> str:
        """GB/s of ``e``'s weight traffic (bytes per step x steps / median), batch 1 only."""
        w = self.workload
        med = self.median(e)
        if not e.bytes_per_step or med is None or w.batch != 1:
            return "-"
        return f"{e.bytes_per_step * w.seq_len / med:.1f}"


def run_workload(w: AnyWorkload, timing: TimingConfig, threads: int,
                 with_lstm_fast: bool) -> Result:
    """Verify and time all engine variants on one workload, printing the details."""
    print(f"\n== {w.name}: {w.describe()} ==", flush=True)
    engines = engines_for(w, threads, with_lstm_fast)
    quantized = weights_of(w) != "fp32"
    versus = "vs the fp32 model" if quantized else "vs lstm_fast"
    for e in (engines if quantized else engines[1:]):
        diff = "-" if e.max_abs_diff is None else f"{e.max_abs_diff:.3g}"
        print(f"  max|Δ| {e.name:<30} {versus}: {diff}"
              + ("" if e.status == "ok" else f"  {e.status}: {e.reason}"))
    try:
        timed = [e.contender for e in engines if e.contender is not None]
        per_turn: dict[str, int] = {}
        estimates = []
        for c in timed:
            per_call = c.warm_up(seconds=timing.warmup_s)
            per_turn[c.name] = max(1, round(timing.batch_ms * 1e6 / per_call))
            estimates.append(per_call * per_turn[c.name])
        rounds = math.ceil(timing.budget_s * 1e9 / sum(estimates))
        rounds = min(max(rounds, timing.min_rounds), timing.max_rounds)
        print(f"  timing {rounds} interleaved rounds (~{sum(estimates) * rounds / 1e9:.1f} s)",
              flush=True)
        settle = timing.settle_ms / 1e3 if threads > 1 else 0.0
        interleave(timed, finished=lambda c: c.turns >= rounds,
                   count=lambda c: per_turn[c.name], each=False, settle_s=settle)
    finally:
        close(engines)
    result = Result(w, engines, per_turn)
    rows = []
    for e in engines:
        if e.latencies:
            p10, p50, p90 = percentiles(e.latencies, (10, 50, 90))
            rows.append([e.name, format_time(p50), format_time(p10), format_time(p90),
                         str(per_turn[e.name]), str(len(e.latencies)),
                         "-" if e.max_abs_diff is None else f"{e.max_abs_diff:.2g}"])
            if quantized:
                rows[-1] += [e.weights, fmt_bytes(e.bytes_per_step), result.gbs(e)]
    print()
    headers = ["variant", "median", "p10", "p90", "calls/batch", "rounds", f"max|Δ| {versus}"]
    if quantized:
        headers += ["weights", "bytes/step", "GB/s"]
    print("\n".join(format_table(headers, rows)))
    return result


def summary_cell(r: Result, fam: str) -> str:
    best = r.best(fam)
    if best is None:
        bad = [e.status for e in r.engines if family(e) == fam and e.status != "ok"]
        return "MISMATCH" if "mismatch" in bad else "failed" if "failed" in bad else "-"
    cell = format_time(r.median(best))
    if sum(family(e) == fam for e in r.engines) > 1:
        cell += f" ({variant(best)})"
    return cell


def ratio(r: Result, fam: str) -> str:
    a, b = r.best(fam), r.best("lstm_fast")
    return "-" if a is None or b is None else f"{r.median(a) / r.median(b):.2f}x"


def per_row_step(r: Result) -> str:
    """lstm_fast's median per time step and batch row (a chunk's frame, a server's stream)."""
    best = r.best("lstm_fast")
    w = r.workload
    return "-" if best is None else format_time(r.median(best) / (w.seq_len * w.batch))


def print_summary(results: Sequence[Result], threads: int) -> None:
    """Print the final comparison table (median time per call) of the float32 rows."""
    results = [r for r in results if weights_of(r.workload) == "fp32"]
    if not results:
        return
    rows = [[r.workload.name, summary_cell(r, "lstm_fast"),
             *(summary_cell(r, p) for p in PEERS), *(ratio(r, p) for p in PEERS),
             per_row_step(r)] for r in results]
    headers = ["workload", "lstm_fast", *PEERS.values(),
               *(f"{t}/lstm_fast" for t in PEERS.values()), "lstm_fast per step·row"]
    print("\nMedian time per call (one step, one sequence batch, or ids -> logits for one "
          f"classifier batch),\n{threads} thread(s) for every engine (ratios > 1: lstm_fast is "
          "faster)")
    print("\n".join(format_table(headers, rows)))


def quantized_cell(r: Result, fam: str) -> str:
    """The best variant of ``fam``: median, error and (batch 1) GB/s."""
    best = r.best(fam)
    if best is None:
        return summary_cell(r, fam)
    cell = format_time(r.median(best))
    if fam in PEERS:
        cell += f" ({variant(best)})"
    err = "-" if best.max_abs_diff is None else f"{best.max_abs_diff:.2g}"
    gbs = r.gbs(best)
    return cell + f", err {err}" + ("" if gbs == "-" else f", {gbs} GB/s")


def print_quantized_summary(results: Sequence[Result], threads: int) -> None:
    """Print the quantized rows: lstm_fast quantized vs its float32 model and the peers'
    quantized variants (median per call, max abs error vs the fp32 model, GB/s)."""
    results = [r for r in results if weights_of(r.workload) != "fp32"]
    if not results:
        return
    rows = [[r.workload.name, weights_of(r.workload),
             fmt_bytes(b.bytes_per_step) if (b := r.best("lstm_fast")) else "-",
             quantized_cell(r, "lstm_fast"), quantized_cell(r, FP32),
             *(quantized_cell(r, p) for p in PEERS), ratio(r, FP32),
             *(ratio(r, p) for p in PEERS)] for r in results]
    headers = ["workload", "weights", "bytes/step", "lstm_fast", "lstm_fast fp32",
               *(f"{t} (quantized)" for t in PEERS.values()), "fp32/lstm_fast",
               *(f"{t}/lstm_fast" for t in PEERS.values())]
    print(f"\nQuantized weights: median time per call, max abs error vs the fp32 model over "
          f"a {ERROR_STEPS}-step stream (sequence rows: the whole batch), GB/s of weight "
          f"traffic at batch 1;\n{threads} thread(s) for every engine (ratios > 1: lstm_fast "
          "is faster)")
    print("\n".join(format_table(headers, rows)))


def results_to_json(results: Sequence[Result], timing: TimingConfig,
                    env: dict[str, Any]) -> dict[str, Any]:
    """The raw per-round numbers (ns per call) of every variant, with the environment."""
    workloads = {}
    for r in results:
        workloads[r.workload.name] = {
            "workload": asdict(r.workload), "agrees": r.agrees, "tolerance": TOLERANCE,
            "best": {f: {"variant": b.name, "median_ns": r.median(b)}
                     for f in ("lstm_fast", FP32, *PEERS) if (b := r.best(f)) is not None},
            "weights": weights_of(r.workload),
            "variants": {e.name: {
                "engine": family(e), "status": e.status, "reason": e.reason,
                # quantized rows: vs the fp32 model's outputs
                "max_abs_diff_vs_lstm_fast": e.max_abs_diff,
                "weights": e.weights, "bytes_per_step": e.bytes_per_step,
                "calls_per_batch": r.calls_per_turn.get(e.name), "rounds": len(e.latencies),
                "median_ns": r.median(e),
                "p10_ns": percentiles(e.latencies, (10,))[0] if e.latencies else None,
                "p90_ns": percentiles(e.latencies, (90,))[0] if e.latencies else None,
                "per_call_ns": e.latencies} for e in r.engines},
        }
    return {"environment": env, "timing": asdict(timing), "workloads": workloads}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``only`` becomes a list of workload names."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="much shorter timing (smoke test)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="workload(s) to run, comma-separated or repeated: "
                             + ", ".join(WORKLOADS_BY_NAME))
    parser.add_argument("--json", type=Path, metavar="PATH", help="write raw numbers to PATH")
    parser.add_argument("--no-lstm-fast", action="store_true",
                        help="time only the peers (torch, ORT); lstm_fast still checks them")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for every engine (torch, ORT intra-op, lstm_fast); "
                             "default 1")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="timed seconds per workload (default 2.5, or 0.25 with --quick)")
    args = parser.parse_args(argv)
    names = [n for item in args.only or [] for n in item.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS_BY_NAME]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS_BY_NAME)}")
    args.only = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; 0 on success, 1 if some engine disagreed or failed."""
    args = parse_args(argv)
    timing = QUICK_TIMING if args.quick else DEFAULT_TIMING
    if args.budget is not None:
        timing = replace(timing, budget_s=args.budget)
    workloads = [WORKLOADS_BY_NAME[n] for n in args.only] if args.only else list(WORKLOADS)
    threads = max(1, args.threads)
    import onnx
    import onnxruntime as ort
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # raises if inter-op pool already started
        torch.set_num_interop_threads(1)
    ort.set_default_logger_severity(3)
    lf.set_num_threads(threads)
    env = environment(lf.Model(make_spec(workloads[0])).isa, threads)
    env.update(torch=torch.__version__, torch_num_threads=torch.get_num_threads(),
               onnxruntime=ort.__version__, onnx=onnx.__version__)
    print(f"lstm_fast: {lf.__version__} from {lf.__file__}")
    print(f"torch {env['torch']} (threads={env['torch_num_threads']}), "
          f"onnxruntime {env['onnxruntime']}, numpy {np.__version__}, CPU: {env['cpu']}")
    results = [run_workload(w, timing, threads, not args.no_lstm_fast) for w in workloads]
    print_summary(results, threads)
    print_quantized_summary(results, threads)
    if args.json is not None:
        args.json.write_text(json.dumps(results_to_json(results, timing, env), indent=1) + "\n")
        print(f"\nraw numbers written to {args.json}")
    ok = all(r.agrees for r in results)
    if not ok:
        print("\nWARNING: some engines disagree beyond tolerance or failed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
