import os

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=15, deadline=None)
settings.register_profile("soak", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def available_isas() -> list[str]:
    import lstm_fast._core as core

    order = ["portable", "avx2", "avx512"]
    return order[: order.index(core.best_isa()) + 1]


@pytest.fixture(params=available_isas())
def isa(request: pytest.FixtureRequest) -> str:
    """Every kernel level this CPU can run, portable included."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
