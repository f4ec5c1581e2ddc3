"""Type stubs of the Cython layer (lstm_fast/_core.pyx)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

ISA_NAMES: dict[int, str]
ISA_CODES: dict[str, int]
KINDS: dict[str, int]
ACTIVATIONS: dict[str, int]
FLAGS: dict[str, int]
MERGES: dict[str, int]
MAX_DIM: int

def best_isa() -> str: ...
def blas_core_name() -> str: ...
def set_threads(n: int) -> None: ...
def get_threads() -> int: ...

class CModel:
    input_size: int
    output_size: int
    takes_ids: bool
    returns_last: bool
    state_sizes: tuple[tuple[int, int], ...]
    isa: str
    step_weight_bytes: int
    def __init__(self, layers: list[dict[str, Any]], isa: str = ...) -> None: ...

class CState:
    model: CModel
    batch: int
    def __init__(self, model: CModel, batch: int) -> None: ...
    def reset(self, indices: Sequence[int] | np.ndarray | None = ...) -> None: ...
    def get(self, k: int) -> tuple[np.ndarray, np.ndarray | None]: ...
    def set(self, k: int, h_arr: Any, c_arr: Any = ...) -> None: ...
    def run(self, x: Any, lengths: Any = ..., check_finite: bool = ...) -> np.ndarray: ...
    def step(self, x: Any, check_finite: bool = ...) -> np.ndarray: ...
