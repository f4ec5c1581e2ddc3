"""Load test of examples/stream_server.py on loopback: hundreds of concurrent sessions.

Starts the server (a separate process, on 127.0.0.1 with a free port) unless ``--port`` names
one already running, opens ``--sessions`` connections, and has each send ``--frames`` frames,
one at a time: send, wait for the reply, send the next. It checks that every frame gets
exactly one reply, in order (the reply's sequence number is the frame's), and with
``--check`` that each session's outputs equal ``Model.predict`` on that session's frames.
It reports the latency per frame (p50/p90/p99/max, send to reply) and the frames per second.

    python examples/stream_load_test.py --sessions 256 --frames 200 --random 128,256 --check

Bounded: at most 4096 sessions and 100,000 frames per session, and ``--timeout`` seconds
(default 300) for the whole run; only 127.0.0.1 is contacted. Exit code 0 when every check
passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stream_server import HELLO, HOST, MAGIC, SEQ, random_model  # noqa: E402

import lstm_fast as lf  # noqa: E402

MAX_SESSIONS, MAX_FRAMES = 4096, 100_000


class Client(asyncio.Protocol):
    """One session: frames sent one at a time; replies checked for order."""

    def __init__(self, frames: np.ndarray, start: asyncio.Event, done: asyncio.Future[None]
                 ) -> None:
        self.frames, self.start, self.done = frames, start, done
        self.buf = bytearray()
        self.sizes: tuple[int, int] | None = None
        self.sent_at = 0
        self.next_seq = 0
        self.latencies_ns: list[int] = []
        self.outputs: list[bytes] = []
        self.errors: list[str] = []
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.sizes is None:
            if len(self.buf) < HELLO.size:
                return
            magic, I, O = HELLO.unpack_from(self.buf)
            del self.buf[:HELLO.size]
            if magic != MAGIC or I != self.frames.shape[1]:
                self.fail(f"bad hello {magic!r} I={I}")
                return
            self.sizes = (I, O)
            self.ready.set_result(None)
        size = SEQ.size + 4 * self.sizes[1]
        while len(self.buf) >= size:
            now = time.perf_counter_ns()
            (seq,) = SEQ.unpack_from(self.buf)
            if seq != self.next_seq - 1:
                self.fail(f"reply {seq} where {self.next_seq - 1} was due (lost or out of "
                          f"order)")
                return
            self.latencies_ns.append(now - self.sent_at)
            self.outputs.append(bytes(self.buf[SEQ.size:size]))
            del self.buf[:size]
            self.send_next()

    def send_next(self) -> None:
        if self.next_seq == len(self.frames):
            if not self.done.done():
                self.done.set_result(None)
            return
        assert self.transport is not None
        self.sent_at = time.perf_counter_ns()
        self.transport.write(SEQ.pack(self.next_seq) + self.frames[self.next_seq].tobytes())
        self.next_seq += 1

    def fail(self, message: str) -> None:
        self.errors.append(message)
        for f in (self.ready, self.done):
            if not f.done():
                f.set_exception(RuntimeError(message))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.fail(f"connection lost after {len(self.outputs)} replies ({exc})")


async def drive(port: int, inputs: np.ndarray, timeout: float) -> tuple[list[Client], float]:
    loop = asyncio.get_running_loop()
    start = asyncio.Event()
    clients = []
    for frames in inputs:
        done: asyncio.Future[None] = loop.create_future()
        _, c = await asyncio.wait_for(
            loop.create_connection(lambda f=frames, d=done: Client(f, start, d), HOST, port),
            timeout)
        clients.append(c)
    await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), timeout)
    t0 = time.perf_counter()
    for c in clients:
        c.send_next()
    await asyncio.wait_for(asyncio.gather(*(c.done for c in clients), return_exceptions=True),
                           timeout)
    wall = time.perf_counter() - t0
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return clients, wall


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, str(HERE / "stream_server.py"), "--port", "0", "--tick-us",
           str(args.tick_us), "--max-seconds", str(args.timeout + 30)]
    cmd += ["--model", args.model] if args.model else ["--random", args.random]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(f"listening on {HOST}:"):
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="the server's model file")
    src.add_argument("--random", metavar="I,H", default="128,256",
                     help="the server's random I->H LSTM (default 128,256)")
    p.add_argument("--port", type=int, help="a server already running on 127.0.0.1:PORT")
    p.add_argument("--sessions", type=int, default=256)
    p.add_argument("--frames", type=int, default=200, help="frames per session")
    p.add_argument("--tick-us", type=float, default=500.0, help="the server's tick")
    p.add_argument("--check", action="store_true",
                   help="also check every output against Model.predict")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS or not 1 <= args.frames <= MAX_FRAMES:
        p.error(f"--sessions must be 1..{MAX_SESSIONS} and --frames 1..{MAX_FRAMES}")
    model = lf.load(args.model) if args.model else random_model(
        *(int(v) for v in args.random.split(",")))
    rng = np.random.default_rng(7)
    inputs = (0.5 * rng.standard_normal((args.sessions, args.frames, model.input_size))
              ).astype(np.float32)
    proc = None
    if args.port is None:
        proc, port = start_server(args)
    else:
        port = args.port
    try:
        clients, wall = asyncio.run(drive(port, inputs, args.timeout))
    finally:
        if proc is not None:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
            print("server: " + out.strip().splitlines()[-1] if out.strip() else "server: -")
    errors = [f"session {j}: {e}" for j, c in enumerate(clients) for e in c.errors]
    replies = sum(len(c.outputs) for c in clients)
    want = args.sessions * args.frames
    if replies != want and not errors:
        errors.append(f"{replies} replies for {want} frames")
    max_err = None
    if args.check and not errors:
        ys = np.array([[np.frombuffer(o, np.float32) for o in c.outputs] for c in clients])
        max_err = float(np.abs(ys - model.predict(inputs)).max())
        if max_err > 1e-5:
            errors.append(f"outputs differ from Model.predict by up to {max_err:.3g}")
    lat = np.concatenate([c.latencies_ns for c in clients]) / 1e6 if replies else np.zeros(1)
    report = {"sessions": args.sessions, "frames_per_session": args.frames, "replies": replies,
              "seconds": wall, "frames_per_s": replies / wall if wall else 0.0,
              "latency_ms": {q: float(np.percentile(lat, v)) for q, v in
                             (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
              "in_order_none_lost": not errors, "max_abs_diff_vs_predict": max_err,
              "errors": errors[:10]}
    print(f"{args.sessions} sessions x {args.frames} frames on 127.0.0.1:{port}: {replies:,} "
          f"replies in {wall:.2f} s = {report['frames_per_s']:,.0f} frames/s")
    print("latency per frame (ms): " + "  ".join(f"{k} {v:.3f}" for k, v in
                                                 report["latency_ms"].items()))
    print("every frame answered once, in order: " + ("yes" if not errors else "NO"))
    if max_err is not None:
        print(f"outputs vs Model.predict: max abs difference {max_err:.3g}")
    for e in errors[:10]:
        print("  " + e)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
