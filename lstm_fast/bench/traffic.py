"""Bytes of weights one step of a model reads, per engine: the weight traffic behind the
bench's GB/s column (bytes per step / time per step; at batch 1 a step reads every weight
once, so this is the figure the memory bandwidth bounds).

Counted: every recurrent cell's weight matrices, projections and Dense weights in their storage
type plus what the step reads beside them (float32 biases; int8: the float32 scale of each
row, and for the cells on the AVX-512 VNNI level the int32 zero-point correction of each row).
Embedding tables are not counted (a step reads one row).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ITEMSIZE", "lstm_fast_step_bytes", "peer_step_bytes"]

#: Bytes per weight of each storage type.
ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def _cells_and_dense(spec: Any) -> tuple[list[Any], list[Any]]:
    cells = list(spec.cells)
    dense = [L for L in spec.layers if L.kind == "dense"]
    return cells, dense


def _bias_floats(cell: Any) -> int:
    """Float32 biases a step of ``cell`` reads (a GRU's separate recurrent bias of n too)."""
    rows = cell.w_ih.shape[0]
    return rows + (cell.hidden_size if cell.kind == "gru" else 0)


def lstm_fast_step_bytes(model: Any) -> int:
    """Bytes one step of an lstm_fast :class:`~lstm_fast.Model` reads.

    The packed recurrent weights as the engine holds them (``model.step_weight_bytes``: the
    storage type, hidden units padded to the vector width), their float32 biases, and for int8
    the per-row float32 scales (W_ih and W_hh) and, on the avx512 level (VNNI), the per-row
    int32 zero-point corrections; projections and Dense weights in the model's storage type
    too (the engine keeps them narrow), int8 ones with one float32 scale per output.
    """
    spec = model.spec
    dtype = spec.weights_dtype

    def matrix(a: Any) -> int:
        return ITEMSIZE[dtype] * int(a.size) + (4 * a.shape[0] if dtype == "int8" else 0)

    cells, dense = _cells_and_dense(spec)
    total = int(model.step_weight_bytes)
    for c in cells:
        total += 4 * _bias_floats(c)
        if dtype == "int8":
            per_row = 2 * c.w_ih.shape[0]  # W_ih's rows and W_hh's
            total += 4 * per_row * (2 if model.isa == "avx512" else 1)
        if getattr(c, "w_hr", None) is not None:
            total += matrix(c.w_hr)
    for d in dense:
        total += matrix(d.weight) + (0 if d.bias is None else 4 * int(d.bias.size))
    return total


def peer_step_bytes(spec: Any, quantization: Any = None) -> int:
    """Bytes one step of a peer framework reads: the spec's weight matrices (cells,
    projections, Dense) at float32, or at the quantized variant's storage type with its
    float32 scales (one per matrix, or per row with ``quantization.per_row``); float32
    biases."""
    dtype = "fp32" if quantization is None else quantization.dtype
    per_row = quantization is not None and quantization.dtype == "int8" and quantization.per_row

    def matrix(a: Any) -> int:
        scales = 0 if dtype != "int8" else (a.shape[0] if per_row else 1)
        return ITEMSIZE[dtype] * int(a.size) + 4 * scales

    cells, dense = _cells_and_dense(spec)
    total = 0
    for c in cells:
        total += matrix(c.w_ih) + matrix(c.w_hh) + 4 * _bias_floats(c)
        if getattr(c, "w_hr", None) is not None:
            total += matrix(c.w_hr)
    for d in dense:
        total += matrix(d.weight) + (0 if d.bias is None else 4 * int(d.bias.size))
    return total
