"""A streaming inference server: one StreamPool session per TCP connection, on 127.0.0.1 only.

Each connection is one session (opened on connect, closed on disconnect). The wire protocol is
binary and little-endian:

    server -> client, once:    b"LFS1", u32 input_size I, u32 output_size O
    client -> server, a frame: u32 seq, I float32
    server -> client, a reply: u32 seq, O float32     (the session's output for that frame)

Frames of one connection are answered in the order they arrive (a client may send the next
frame before the previous reply; it waits in the connection's queue). Frames of all sessions
that arrive within one tick (``--tick-us``) are stepped in one engine call by
``StreamPool.step_async``; a bad frame (NaN, say) closes only its own connection.

    python examples/stream_server.py --model model.lfm --port 8765
    python examples/stream_server.py --random 128,256 --port 0      # a random 128->256 LSTM

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections, and stops on SIGINT or
SIGTERM, or after ``--max-seconds``. ``examples/stream_load_test.py`` drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import struct
import sys
from typing import Any

import numpy as np

import lstm_fast as lf

HOST = "127.0.0.1"  # loopback only: this example never listens on another interface
MAGIC = b"LFS1"
HELLO = struct.Struct("<4sII")
SEQ = struct.Struct("<I")


def random_model(input_size: int, hidden_size: int, seed: int = 0) -> lf.Model:
    """A random one-layer LSTM, the same for the same arguments (server and load test)."""
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(hidden_size)
    layer = (rng.uniform(-s, s, (4 * hidden_size, input_size)),
             rng.uniform(-s, s, (4 * hidden_size, hidden_size)),
             rng.uniform(-s, s, 4 * hidden_size), rng.uniform(-s, s, 4 * hidden_size))
    return lf.Model.from_lstm_weights([layer])


class Session(asyncio.Protocol):
    """One connection: a pool session, frames answered in order, one at a time."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.pool = server.pool
        self.request = SEQ.size + 4 * self.pool.model.input_size
        self.buf = bytearray()
        self.queue: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self.busy = False
        self.key: Any = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        try:
            self.key = self.pool.open()
        except lf.PoolFullError:
            transport.close()
            return
        self.server.sessions += 1
        m = self.pool.model
        transport.write(HELLO.pack(MAGIC, m.input_size, m.output_size))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n, size = 0, self.request
        while len(self.buf) - n >= size:
            (seq,) = SEQ.unpack_from(self.buf, n)
            frame = np.frombuffer(self.buf, np.float32, self.pool.model.input_size,
                                  n + SEQ.size).copy()
            self.queue.append((seq, frame))
            n += size
        del self.buf[:n]
        self.next()

    def next(self) -> None:
        if self.busy or not self.queue or self.transport is None:
            return
        seq, frame = self.queue.popleft()
        try:
            fut = self.pool.step_async(self.key, frame)
        except lf.LstmFastError as e:  # a bad frame ends this session only
            self.fail(e)
            return
        self.busy = True
        fut.add_done_callback(lambda f, seq=seq: self.reply(seq, f))

    def reply(self, seq: int, fut: asyncio.Future[np.ndarray]) -> None:
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        if fut.cancelled() or fut.exception() is not None:
            self.fail(fut.exception())
            return
        self.transport.write(SEQ.pack(seq) + fut.result().tobytes())
        self.server.frames += 1
        self.next()

    def fail(self, error: BaseException | None) -> None:
        print(f"session {self.key}: {error}; closing it", file=sys.stderr)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.key is not None and self.key in self.pool:
            self.pool.close(self.key)


class Server:
    """The listening socket and its pool."""

    def __init__(self, model: lf.Model, tick_us: float, capacity: int | None) -> None:
        self.pool = lf.StreamPool(model, capacity, tick_us=tick_us)
        self.sessions = 0
        self.frames = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def stop(self) -> None:
        """Stop serving (from any thread)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self, port: int, max_seconds: float | None,
                    ready: asyncio.Future[int] | None = None) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Session(self), HOST, port, backlog=1024)
        bound = server.sockets[0].getsockname()[1]
        print(f"listening on {HOST}:{bound}", flush=True)
        if ready is not None:
            ready.set_result(bound)
        self._loop, self._stop = loop, asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        try:
            await asyncio.wait_for(self._stop.wait(), max_seconds)
        except asyncio.TimeoutError:
            pass
        server.close()
        await server.wait_closed()
        stats = self.pool.stats
        print(f"served {self.frames} frames to {self.sessions} sessions in {stats['calls']} "
              f"engine calls ({stats['frames'] / max(stats['calls'], 1):.1f} frames per call)",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model file (lstm-fast convert)")
    src.add_argument("--random", metavar="I,H", help="a random I->H LSTM (seed 0)")
    p.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (0: any)")
    p.add_argument("--tick-us", type=float, default=500.0,
                   help="longest wait for frames to share an engine call (default 500)")
    p.add_argument("--capacity", type=int, help="most sessions at once (default: no limit)")
    p.add_argument("--max-seconds", type=float, help="stop after this long")
    p.add_argument("--threads", type=int, default=1, help="lstm_fast threads (default 1)")
    args = p.parse_args(argv)
    lf.set_num_threads(args.threads)
    if args.model:
        model = lf.load(args.model)
    else:
        I, H = (int(v) for v in args.random.split(","))
        model = random_model(I, H)
    asyncio.run(Server(model, args.tick_us, args.capacity).serve(args.port, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
