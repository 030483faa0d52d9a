"""Fixtures of the proxy app's tests."""

import pytest

from proxy.simulator import RunningSimulator


@pytest.fixture(scope="module")
def fast_sim():
    """One unpaced simulator shared by a module's tests that do not care about timing."""
    with RunningSimulator(tokens_per_second=0, ttft=0) as sim:
        yield sim


@pytest.fixture
def sim(fast_sim):
    fast_sim.reset()
    return fast_sim
