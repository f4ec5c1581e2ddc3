"""One model, many threads, each with its own stream: results equal serial runs."""

import threading

import numpy as np

import lstm_fast as lf
from tests.reference import random_layers


def test_eight_threads_share_one_model(rng):
    layers = random_layers(rng, 16, 40, 2)
    model = lf.Model.from_lstm_weights(layers)
    inputs = [rng.standard_normal((1 + k % 3 * 5, 80, 16)).astype(np.float32) for k in range(8)]
    serial = []
    for x in inputs:
        s = model.stream(batch=x.shape[0])
        serial.append((model.predict(x), np.stack([s.step(x[:, t]) for t in range(80)], 1)))
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        x = inputs[k]
        barrier.wait()
        outs = []
        for _ in range(5):
            s = model.stream(batch=x.shape[0])
            outs.append((model.predict(x), np.stack([s.step(x[:, t]) for t in range(80)], 1)))
        results[k] = outs

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        for pred, steps in results[k]:
            np.testing.assert_array_equal(pred, serial[k][0])
            np.testing.assert_array_equal(steps, serial[k][1])
