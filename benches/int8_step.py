"""int8 vs fp32 B=1 stream steps (issue 13), and ONNX Runtime's int8 LSTM if installed.

Each engine steps one stream (state carried) N times per round; the engines run round-robin,
the starting engine rotating, and the time is thread CPU time (the machines are shared). Prints
medians per step, weight GB/s (bytes of recurrent weights per step / time) and the max abs
error over a 500-step stream against the float64 oracle of the fp32 weights.

    PYTHONPATH=. python benches/int8_step.py [ROUNDS]   (1 thread; from the repository root)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import lstm_fast as lf  # noqa: E402
from lstm_fast.spec import GRULayerSpec, LSTMLayerSpec, ModelSpec  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.reference import spec_forward  # noqa: E402

SIZES = (("lstm", 64, 128), ("lstm", 128, 256), ("lstm", 256, 512), ("gru", 128, 256))


def make_spec(kind: str, I: int, H: int, seed: int) -> ModelSpec:
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(H)
    G = 4 if kind == "lstm" else 3
    w = [rng.uniform(-s, s, shape).astype(np.float32)
         for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,))]
    if kind == "lstm":
        return ModelSpec(layers=(LSTMLayerSpec(w[0], w[1], w[2] + w[3]),))
    return ModelSpec(layers=(GRULayerSpec(w[0], w[1], w[2], w[3]),))


def ort_steppers(spec: ModelSpec, tmp: str) -> dict[str, Callable[[np.ndarray], Any]]:
    """ORT int8 (DynamicQuantizeLSTM, per-tensor and per-channel) steppers of an LSTM."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return {}
    L = spec.layers[0]
    H, I = L.hidden_size, L.input_size
    perm = np.concatenate([np.arange(H) + k * H for k in (0, 3, 1, 2)])  # ifgo -> iofc
    b = np.concatenate([L.bias[perm], np.zeros(4 * H, np.float32)])[None]
    inits = [numpy_helper.from_array(L.w_ih[perm][None].astype(np.float32), "W"),
             numpy_helper.from_array(L.w_hh[perm][None].astype(np.float32), "R"),
             numpy_helper.from_array(b.astype(np.float32), "B")]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H)
    g = helper.make_graph([node], "lstm", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, I]),
        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, H]),
        helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 1, H])],
        [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 1, H]),
         helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, 1, H])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    path = os.path.join(tmp, f"l{I}_{H}.onnx")
    onnx.save(m, path)
    out = {}
    for pc in (False, True):
        q = path.replace(".onnx", f"_q{int(pc)}.onnx")
        quantize_dynamic(path, q, per_channel=pc, weight_type=QuantType.QInt8)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])

        out[f"ort_int8_{'pc' if pc else 'pt'}"] = _ort_step(sess, H)
    return out


def _ort_step(sess: Any, H: int) -> Callable[[np.ndarray], Any]:
    st = {"h": np.zeros((1, 1, H), np.float32), "c": np.zeros((1, 1, H), np.float32)}

    def step(x: np.ndarray) -> Any:
        st["h"], st["c"] = sess.run(["Y_h", "Y_c"], {"X": x.reshape(1, 1, -1),
                                                      "h0": st["h"], "c0": st["c"]})
        return st["h"]

    return step


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    tmp = tempfile.mkdtemp()
    print(f"lstm_fast {lf.__file__}; best isa {lf.Model(make_spec('lstm', 4, 16, 0)).isa}")
    for kind, I, H in SIZES:
        spec = make_spec(kind, I, H, 1234 + I)
        fp32 = lf.Model(spec)
        q8 = fp32.quantize("int8", measure_steps=0)
        models = {"fp32_auto": fp32, "int8_auto": q8,
                  "fp32_avx2": lf.Model(spec, isa="avx2"),
                  "int8_avx2": lf.Model(q8.spec, isa="avx2")}
        steppers: dict[str, Callable[[np.ndarray], Any]] = {}
        for name, m in models.items():
            s = m.stream(1)
            steppers[name] = lambda x, s=s: s.step(x)
        if kind == "lstm":
            steppers.update(ort_steppers(spec, tmp))
        xs = np.random.default_rng(7).uniform(-1, 1, (1, 500, I)).astype(np.float32)
        ref = spec_forward(spec, xs)[0][0]
        errs = {}
        for name, m in models.items():
            errs[name] = np.abs(m.stream(1).run(xs)[0] - ref).max()
        for name in steppers:
            if name.startswith("ort"):
                f = ort_steppers(spec, tmp)[name]
                hs = np.array([np.asarray(f(xs[:, t])).reshape(-1) for t in range(500)])
                errs[name] = np.abs(hs - ref).max()
        wbytes = {n: m.step_weight_bytes for n, m in models.items()}
        n = max(20, int(2e6 / (4 * H * (I + H))))
        times: dict[str, list[float]] = {k: [] for k in steppers}
        x = xs[:, 0]
        names = list(steppers)
        for r in range(rounds):
            for k in names[r % len(names):] + names[:r % len(names)]:
                f = steppers[k]
                f(x)
                t0 = time.thread_time_ns()
                for _ in range(n):
                    f(x)
                times[k].append((time.thread_time_ns() - t0) / n)
        base = float(np.median(times["fp32_auto"]))
        for k in names:
            med = float(np.median(times[k]))
            gbs = f"{wbytes[k] / med:6.1f} GB/s" if k in wbytes else " " * 11
            print(f"{kind.upper()} {I:4d}->{H:<4d} {k:14s} {med / 1e3:8.2f} us  {gbs}  "
                  f"x{base / med:5.2f} vs fp32_auto  err500 {errs[k]:.2e}", flush=True)


if __name__ == "__main__":
    main()
