"""``lstm-fast bench`` and ``benches/compare.py``: one bench stack.

:mod:`.timing` (the interleaved protocol, idle pause, wake-up call), :mod:`.engines` (the
workload of a call, lstm_fast and its peers from :mod:`lstm_fast.peers` checked against each
other), :mod:`.isolated` (with several threads: each engine in a process of its own, the
processes taking turns), :mod:`.traffic` (bytes of weights a step reads), :mod:`.report`
(statistics, tables, JSON, plot, environment) and :mod:`.command` (the ``lstm-fast bench``
command line).
"""

from __future__ import annotations

from .command import add_parser, main, run
from .engines import TOLERANCE, flop_counts
from .report import SCHEMA
from .timing import isa_sgemm_peak, sgemm_peak

__all__ = ["SCHEMA", "TOLERANCE", "add_parser", "flop_counts", "isa_sgemm_peak", "main", "run",
           "sgemm_peak"]
