"""The ``lstm-fast`` command line."""

from __future__ import annotations

import argparse
import sys

from .errors import LstmFastError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lstm-fast", description="Fast CPU inference for LSTMs.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="generate text with the bundled character-level LSTM",
                       description="Run the bundled character-level LSTM: it writes text one "
                                   "character at a time through a stateful stream and reports "
                                   "the latency per step.")
    d.add_argument("--chars", type=int, default=400, help="characters to generate (default 400)")
    d.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature; 0 = greedy (default)")
    d.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            if args.chars < 1:
                raise ValueError("--chars must be at least 1")
            from .demo import run_demo

            run_demo(args.chars, args.temperature, args.seed)
        return 0
    except (LstmFastError, ValueError, OSError) as e:
        print(f"lstm-fast: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
