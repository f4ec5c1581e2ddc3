"""What the bench reports: statistics, the environment block, text tables, the JSON document
and the latency plot."""

from __future__ import annotations

import argparse
import math
import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np

from .engines import Engine, Workload, flop_counts
from .timing import PEAK_SIZE

__all__ = ["NOISY", "SCHEMA", "describe", "engine_stats", "environment", "format_table",
           "format_time", "header_lines", "json_document", "plot", "result_lines"]

SCHEMA = "lstm_fast.bench/1"
#: p99 above NOISY x p50 marks a noisy machine.
NOISY = 2.0


def engine_stats(e: Engine, wl: Workload, peak: float | None,
                 frame_rate: float | None) -> dict[str, Any]:
    """The figures of a timed engine: percentiles, per step, throughput, GFLOP/s, RTF."""
    lat = np.asarray(e.latencies, dtype=np.float64) / 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(lat, [50, 90, 99]))
    T = wl.frames_per_call
    gflops = wl.flop_per_call / (p50 * 1e3) if p50 > 0 else 0.0
    rtf = rtf99 = None
    if frame_rate and wl.mode != "sequence":
        rtf, rtf99 = p50 * 1e-6 * frame_rate / T, p99 * 1e-6 * frame_rate / T
    return {
        "calls": int(lat.size), "total_s": e.contender.total_ns / 1e9, "min_us": float(lat.min()),
        "mean_us": float(lat.mean()), "p50_us": p50, "p90_us": p90, "p99_us": p99,
        "max_us": float(lat.max()), "us_per_step": p50 / T,
        "frames_per_s": wl.batch * T / (p50 * 1e-6),
        "sequences_per_s": wl.batch / (p50 * 1e-6) if wl.mode == "sequence" else None,
        "gflops": gflops, "peak_fraction": gflops / peak if peak else None,
        "rtf": rtf, "rtf_p99": rtf99, "bytes_per_step": e.bytes_per_step,
        "weight_gb_per_s": (e.bytes_per_step / (p50 / T * 1e3)
                            if e.bytes_per_step and wl.batch == 1 and p50 > 0 else None),
    }


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(isa: str, threads: int) -> dict[str, Any]:
    """The machine and library versions (the ``environment`` of the JSON document)."""
    import lstm_fast as lf

    info = lf.blas_info()
    return {"lstm_fast": lf.__version__, "isa": isa, "blas": info["blas"],
            "blas_core": info["core"], "best_isa": info["best_isa"],
            "fma_width": info["fma_width"], "threads": threads, "cpu": cpu_name(),
            "logical_cores": os.cpu_count() or 1,
            "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform()}


def describe(spec: Any) -> str:
    """A one-line description of a spec's layers: ``"lstm 4->8 / dense 8->3"``."""
    parts = []
    for L in spec.layers:
        kind = f"bi{L.forward.kind}" if L.kind == "bidirectional" else L.kind
        size = (f"{L.vocab_size}x{L.output_size}" if L.kind == "embedding"
                else f"{L.input_size}->{L.output_size}")
        last = " (last step)" if getattr(L, "return_last", False) else ""
        parts.append(f"{kind} {size}{last}")
    return " / ".join(parts)


def fmt_us(v: float) -> str:
    """A latency in µs with 3-4 significant digits."""
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.1f}"
    return f"{v:.2f}"


def flop_text(flop: float) -> str:
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flop >= scale:
            return f"{flop / scale:.3g} {unit}"
    return f"{flop:.0f} FLOP"


def header_lines(env: dict[str, Any], spec: Any, args: argparse.Namespace, wl: Workload,
                 origin: str, peak: float | None) -> list[str]:
    """The lines printed before timing: versions, machine, model, mode, compute, peak."""
    how = f"{args.iters} calls" if args.iters else f"{args.seconds:g} s"
    per_call = {"step": "1 frame per call (state carried)",
                "chunk": f"{wl.frames_per_call} frames per call (state carried)",
                "sequence": f"whole sequences of {wl.frames_per_call} steps"}[wl.mode]
    if wl.lengths is not None:
        per_call += f", lengths {wl.lengths.min()}..{wl.lengths.max()} " \
                    f"(mean {wl.lengths.mean():.1f})"
    threads = f"{env['threads']} thread{'s' if env['threads'] != 1 else ''}"
    weights = getattr(args, "weights", "fp32")
    lines = [
        f"lstm_fast {env['lstm_fast']}, isa {env['isa']}, BLAS {env['blas']} "
        f"(core {env['blas_core']}), {threads} for every engine",
        f"cpu: {env['cpu']} ({env['logical_cores']} logical cores), Python {env['python']}, "
        f"numpy {env['numpy']}",
        f"model: {origin}: {describe(spec)}; {spec.num_parameters():,} parameters"
        + ("" if weights == "fp32" else f"; lstm_fast runs it with {weights} weights"),
        f"mode {wl.mode}: batch {wl.batch}, {per_call}; warmup {args.warmup}, {how} per engine",
        f"compute: {flop_text(wl.flop_per_call)} per call",
    ]
    if peak:
        core = env.get("sgemm_core")
        of = f", OpenBLAS core {core}, the sgemm of isa {env['isa']}" if core else ""
        lines.append(f"sgemm peak: {peak:.1f} GFLOP/s ({PEAK_SIZE}^3, {threads}{of})")
    return lines


def fmt_bytes(n: int | None) -> str:
    """A byte count in decimal units: ``"1.57 MB"``; ``"-"`` for None."""
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def fmt_err(v: float | None) -> str:
    """A max abs error with 2 significant digits; ``"-"`` for None."""
    return "-" if v is None else f"{v:.2g}"


def result_lines(engines: list[Engine], stats: dict[str, dict[str, Any]], wl: Workload,
                 args: argparse.Namespace, peak: float | None) -> list[str]:
    """lstm_fast's figures, the table of engines (with ``--compare``) and the noise note."""
    lines: list[str] = []
    ref = stats.get("lstm_fast")
    if ref:
        s = ref
        lines.append(f"latency per call: p50 {fmt_us(s['p50_us'])} us, p90 {fmt_us(s['p90_us'])} "
                     f"us, p99 {fmt_us(s['p99_us'])} us, max {fmt_us(s['max_us'])} us "
                     f"({s['calls']:,} calls)")
        tput = f"frames/s {s['frames_per_s']:,.0f}"
        if s["sequences_per_s"] is not None:
            tput += f", sequences/s {s['sequences_per_s']:,.1f}"
        lines.append(f"per time step: {fmt_us(s['us_per_step'])} us; {tput}")
        g = f"GFLOP/s: {s['gflops']:.2f}"
        if s["peak_fraction"] is not None:
            g += f" = {100 * s['peak_fraction']:.1f}% of the sgemm peak"
        lines.append(g)
        me = next((e for e in engines if e.name == "lstm_fast"), None)
        if me is not None and any(e.quantized for e in engines):
            err = ("" if not me.quantized else
                   f"max abs error vs the fp32 model {fmt_err(me.max_abs_diff)} "
                   f"({_compared(wl)}); ")
            gbs = s["weight_gb_per_s"]
            lines.append(f"weights {me.weights}: {err}{fmt_bytes(me.bytes_per_step)} of weights "
                         "per step" + ("" if gbs is None else f", {gbs:.1f} GB/s"))
        if s["rtf"] is not None:
            lines.append(f"real-time factor at {args.frame_rate:g} Hz: {s['rtf']:.4g} "
                         f"(p99 {s['rtf_p99']:.4g}; below 1 keeps up)")
        elif args.frame_rate and wl.mode == "sequence":
            lines.append("real-time factor: for step and chunk modes only")
    if len(engines) > 1:
        lines.append("")
        quantized = any(e.quantized for e in engines)
        rows = [("engine", "calls", "p50 us", "p90 us", "p99 us", "us/step", "GFLOP/s",
                 "vs lstm_fast")]
        if quantized:
            rows[0] += ("weights", "max err vs fp32", "bytes/step", "GB/s")
        for e in engines:
            s = stats.get(e.name)
            if s is None:
                continue
            ratio = s["ratio_vs_lstm_fast"]
            row: tuple[str, ...] = (
                e.label, f"{s['calls']:,}", fmt_us(s["p50_us"]), fmt_us(s["p90_us"]),
                fmt_us(s["p99_us"]), fmt_us(s["us_per_step"]), f"{s['gflops']:.2f}",
                "-" if ratio is None else f"{ratio:.2f}x")
            if quantized:
                gbs = s["weight_gb_per_s"]
                row += (e.weights, fmt_err(e.max_abs_diff), fmt_bytes(e.bytes_per_step),
                        "-" if gbs is None else f"{gbs:.1f}")
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        lines.append("(ratio = p50 / lstm_fast's p50: above 1 is slower than lstm_fast)")
        if quantized:
            lines.append(f"(max err: max abs difference from the fp32 model's outputs over "
                         f"{_compared(wl)}; GB/s: bytes of weights per step / time per step, "
                         "batch 1 only)")
        for e in engines:
            if e.status != "ok":
                lines.append(f"{e.status}: {e.label}: {e.reason}")
    noisy = [(e.name, stats[e.name]) for e in engines if e.name in stats
             and stats[e.name]["p99_us"] > NOISY * stats[e.name]["p50_us"]]
    if noisy:
        which = ", ".join(f"{n} p99 = {s['p99_us'] / s['p50_us']:.1f}x p50" for n, s in noisy)
        lines.append(f"note: noisy machine ({which}): other load, frequency scaling or "
                     f"interrupts; trust the p50s, or rerun on a quiet machine")
    return lines


def _compared(wl: Workload) -> str:
    """What the engines' outputs were compared on."""
    if wl.mode == "sequence":
        return f"a batch of {wl.batch} sequences of {wl.frames_per_call} steps"
    return f"a {wl.verify_calls * wl.frames_per_call}-step stream of batch {wl.batch}"


def require_matplotlib() -> None:
    """Raise ValueError (a one-line usage error) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'lstm_fast[plot]'") from None


def plot(path: str, engines: list[Engine], title: str) -> None:
    """Latency histogram and CDF, one curve per timed engine."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(11, 4.4))
    hist, cdf = fig.subplots(1, 2)
    timed = [e for e in engines if e.latencies]
    lo = min(min(e.latencies) for e in timed) / 1e3
    # up to the largest p99.9: a few outliers would squeeze every curve into one corner
    hi = max(float(np.percentile(e.latencies, 99.9)) for e in timed) / 1e3
    log = hi > 10 * lo  # a log axis only when the latencies span more than a decade
    bins = (np.geomspace if log else np.linspace)(lo, max(hi, lo * 1.01), 80)
    for k, e in enumerate(timed):
        lat = np.sort(np.asarray(e.latencies, dtype=np.float64)) / 1e3
        color = f"C{k}"
        p50 = float(np.percentile(lat, 50))
        hist.hist(lat[lat <= bins[-1]], bins=bins, histtype="step", color=color, label=f"{e.label}")
        hist.axvline(p50, color=color, linestyle="--", linewidth=0.8)
        cdf.plot(lat, np.arange(1, lat.size + 1) / lat.size, color=color,
                 label=f"{e.label} (p50 {fmt_us(p50)} us)")
    for ax in (hist, cdf):
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(
                lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax.set_xlim(lo / 1.05, hi * 1.05)
        ax.set_xlabel("latency per call (us)")
        ax.grid(True, which="both", alpha=0.3)
    hist.set_ylabel("calls")
    hist.set_title("distribution up to p99.9 (dashed: p50)")
    cdf.set_ylabel("fraction of calls")
    cdf.set_title("CDF")
    for q in (0.5, 0.9, 0.99):
        cdf.axhline(q, color="0.6", linewidth=0.6)
    cdf.legend(loc="lower right", fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------
# The command


def format_time(ns: float | None) -> str:
    """A duration in ns with a human unit and 3 significant digits: ``"850 ns"``,
    ``"12.3 µs"``, ``"4.21 ms"``, ``"1.23 s"``, or ``"-"`` for None / not finite."""
    if ns is None or not math.isfinite(ns):
        return "-"
    units = ((1e9, "s"), (1e6, "ms"), (1e3, "µs"))
    scale, unit = next(((s, u) for s, u in units if ns >= s), (1.0, "ns"))
    value = ns / scale
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {unit}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A text table, `` | ``-separated, the first column left-aligned and the others right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append(" | ".join(cells))
    return lines


def json_document(args: argparse.Namespace, spec: Any, wl: Workload, names: list[str],
                  env: dict[str, Any], peak: float | None, engines: list[Engine],
                  stats: dict[str, dict[str, Any]], noisy: bool) -> dict[str, Any]:
    """The ``lstm_fast.bench/1`` document of one ``lstm-fast bench`` run."""
    per_step, _ = flop_counts(spec)
    return {
        "schema": SCHEMA,
        "config": {"model": args.model, "spec": args.spec, "source": args.source,
                   "mode": wl.mode, "batch": wl.batch, "frames_per_call": wl.frames_per_call,
                   "steps": args.steps, "chunk": args.chunk,
                   "lengths": None if wl.lengths is None else wl.lengths.tolist(),
                   "threads": args.threads, "warmup": args.warmup,
                   "seconds": None if args.iters else args.seconds, "iters": args.iters,
                   "frame_rate": args.frame_rate, "seed": args.seed,
                   "isa": args.isa or "auto", "compare": names,
                   "weights": getattr(args, "weights", "fp32")},
        "environment": env,
        "model": {"description": describe(spec),
                  "layers": [{"kind": L.kind, "input_size": L.input_size,
                              "output_size": L.output_size} for L in spec.layers],
                  "parameters": spec.num_parameters(), "takes_ids": spec.takes_ids,
                  "flop_per_step": per_step, "flop_per_call": wl.flop_per_call},
        "peak": None if peak is None else {"sgemm_gflops": peak, "core": env.get("sgemm_core"),
                                           "size": PEAK_SIZE, "threads": args.threads},
        "engines": [{"name": e.name, "version": e.version, "status": e.status,
                     "reason": e.reason, "max_abs_diff": e.max_abs_diff,
                     "weights": e.weights, "bytes_per_step": e.bytes_per_step,
                     "stats": stats.get(e.name),
                     "latencies_us": [round(v / 1e3, 3) for v in e.latencies]}
                    for e in engines],
        "noisy": noisy,
    }
