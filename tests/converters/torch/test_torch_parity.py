"""Parity with torch.nn.LSTM itself (CI installs torch; skipped where it is missing)."""

import numpy as np
import pytest

import lstm_fast as lf

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("num_layers,bias", [(1, True), (2, True), (3, False)])
def test_from_torch_matches_nn_lstm(num_layers, bias, batch_first):
    torch.manual_seed(num_layers)
    m = torch.nn.LSTM(20, 48, num_layers=num_layers, bias=bias, batch_first=batch_first).eval()
    x = torch.randn(4, 500, 20)
    h0 = torch.randn(num_layers, 4, 48)
    c0 = torch.randn(num_layers, 4, 48)
    with torch.inference_mode():
        y_t, (h_t, c_t) = m(x if batch_first else x.transpose(0, 1), (h0, c0))
    if not batch_first:
        y_t = y_t.transpose(0, 1)
    model = lf.from_torch(m)
    y, (h, c) = model.predict(x.numpy(), initial_state=(h0.numpy(), c0.numpy()),
                              return_state=True)
    np.testing.assert_allclose(y, y_t.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(h, h_t.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(c, c_t.numpy(), rtol=0, atol=1e-5)


def test_stream_matches_torch_stateful_calls():
    torch.manual_seed(0)
    m = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True).eval()
    s = lf.from_torch(m).stream(batch=1)
    state = None
    x = torch.randn(1, 300, 8)
    with torch.inference_mode():
        for t in range(300):
            y_t, state = m(x[:, t:t + 1], state)
            np.testing.assert_allclose(s.step(x[:, t].numpy()), y_t[:, 0].numpy(), atol=1e-5,
                                       rtol=0)


def test_unsupported_torch_modules_are_refused():
    with pytest.raises(lf.UnsupportedModelError, match="LSTMCell"):  # a cell needs its loop
        lf.from_torch(torch.nn.Sequential(torch.nn.LSTM(3, 4), torch.nn.LSTMCell(4, 4)))
    with pytest.raises(lf.UnsupportedModelError, match="Conv1d"):
        lf.from_torch(torch.nn.Sequential(torch.nn.Conv1d(3, 4, 1), torch.nn.LSTM(4, 4)))
    with pytest.raises(lf.UnsupportedModelError, match="Linear"):
        lf.from_torch(torch.nn.Linear(3, 4))
