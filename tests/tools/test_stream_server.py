"""examples/stream_server.py and its load test, on 127.0.0.1 only: every frame of many
concurrent sessions answered once, in order, equal to Model.predict per session; a bad frame
ends only its own session; frames sent ahead are answered in order."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.helpers import ROOT

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def server_module():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import stream_server
        yield stream_server
    finally:
        sys.path.remove(str(EXAMPLES))


def test_load_test_many_sessions(tmp_path):
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, str(EXAMPLES / "stream_load_test.py"), "--sessions",
                          "96", "--frames", "25", "--random", "16,32", "--check", "--timeout",
                          "60", "--json", str(report)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    r = json.loads(report.read_text())
    assert r["replies"] == 96 * 25 and r["in_order_none_lost"] and not r["errors"]
    assert r["max_abs_diff_vs_predict"] < 1e-5
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    assert "frames/s" in run.stdout and "p99" in run.stdout
    assert "engine calls" in run.stdout  # the server's own summary


@pytest.fixture
def server(server_module):
    model = server_module.random_model(4, 6)
    srv = server_module.Server(model, tick_us=300, capacity=8)
    loop = asyncio.new_event_loop()
    ready = loop.create_future()
    thread = threading.Thread(target=lambda: loop.run_until_complete(
        srv.serve(0, 60, ready)), daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(timeout=30)
    yield srv, model, port
    srv.stop()
    thread.join(timeout=30)
    loop.close()


async def _wait(fut):
    return await fut



def connect(server_module, port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    hello = recv_exact(s, server_module.HELLO.size)
    magic, I, O = server_module.HELLO.unpack(hello)
    assert magic == server_module.MAGIC
    return s, I, O


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def test_frames_sent_ahead_and_a_bad_session(server, server_module):
    srv, model, port = server
    rng = np.random.default_rng(3)
    a, I, O = connect(server_module, port)
    b, _, _ = connect(server_module, port)
    x = rng.standard_normal((12, I)).astype(np.float32)
    # a sends all 12 frames at once: answered one by one, in order
    a.sendall(b"".join(struct.pack("<I", 100 + t) + x[t].tobytes() for t in range(12)))
    # b sends a NaN frame: its connection is closed, a is not affected
    bad = np.full(I, np.nan, np.float32)
    b.sendall(struct.pack("<I", 0) + bad.tobytes())
    with pytest.raises(ConnectionError):
        recv_exact(b, 4 + 4 * O)
    ys = []
    for t in range(12):
        reply = recv_exact(a, 4 + 4 * O)
        assert struct.unpack_from("<I", reply)[0] == 100 + t
        ys.append(np.frombuffer(reply, np.float32, O, 4))
    np.testing.assert_allclose(np.array(ys), model.predict(x[None])[0], rtol=0, atol=1e-6)
    a.close()
    b.close()


def test_capacity_refuses_extra_connections(server, server_module):
    srv, model, port = server
    socks = [connect(server_module, port)[0] for _ in range(8)]
    extra = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert extra.recv(16) == b""  # closed: the pool is full
    socks[0].close()
    for _ in range(100):  # the closed session's row frees once the server sees it
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        got = s.recv(server_module.HELLO.size)
        if got:
            socks.append(s)
            break
        s.close()
        time.sleep(0.02)
    else:
        pytest.fail("no session after one closed")
    for s in socks + [extra]:
        s.close()
