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


HOSTED_API_KEY = "sk-sim-hosted-0123456789abcdef"


@pytest.fixture
def hosted_sim():
    """A simulated hosted OpenAI-compatible API: ``/v1/*`` only, behind a bearer key."""
    with RunningSimulator(
        tokens_per_second=0, ttft=0, openai_only=True, api_key=HOSTED_API_KEY
    ) as sim:
        yield sim
