"""The pure rules of admission and restarts: Retry-After estimates, leases, backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from ov_llm_server.engine.supervisor import EngineUnavailable, restart_backoff
from ov_llm_server.model_manager import ModelSlot, ResolvedModel


def slot_with_finishes(times: list[float]) -> ModelSlot:
    slot = ModelSlot(ResolvedModel("m", Path("/nowhere"), None))
    slot.finished.extend(times)
    return slot


@pytest.mark.parametrize(
    ("finishes", "excess", "expected"),
    [
        ([], 5, 1),  # nothing finished yet: no rate to go by
        ([10.0], 5, 1),
        ([0.0, 1.0, 2.0, 3.0, 4.0], 1, 1),  # one a second: the next slot in a second
        ([0.0, 1.0, 2.0, 3.0, 4.0], 8, 8),
        ([0.0, 10.0], 3, 30),  # one per 10 s
        ([0.0, 10.0], 100, 60),  # capped
        ([5.0, 5.0, 5.0], 3, 1),  # a burst finishing at once: drains fast
    ],
)
def test_retry_after_follows_the_drain_rate(
    finishes: list[float], excess: int, expected: int
) -> None:
    assert slot_with_finishes(finishes).retry_after(excess) == expected


def test_restart_backoff_doubles_up_to_a_minute() -> None:
    assert [restart_backoff(n) for n in range(1, 10)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize("wait", [0.0, 0.2, 1.0, 2.5, 59.1])
def test_retry_after_is_a_whole_second_at_least(wait: float) -> None:
    retry = EngineUnavailable("x", wait).retry_after
    assert retry >= 1 and retry >= wait and (retry == 1 or retry - wait < 1)
