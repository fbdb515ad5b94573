"""The rolling restart of converge.yml: both nodes restarted one at a time while each
sampled its own /health (files/health_watch.py); at no moment were both down."""

from __future__ import annotations

from typing import Any

import pytest
import testinfra
from conftest import PLATFORMS, SERVICE_HOSTS, host_name

LOG = "/root/health-watch.log"

pytestmark = pytest.mark.service

Interval = tuple[float, float]


def down_intervals(lines: list[str], up_status: str) -> list[Interval]:
    """Where the node may have been down: from the end of the last answer with its serving
    status before a failed sample to the start of the next one after it (the gap between
    samples counts as down, so a slow sampler can only widen the intervals)."""
    samples = [(float(start), float(end), status) for start, end, status in map(str.split, lines)]
    intervals: list[Interval] = []
    last_up_end: float | None = None
    down_since: float | None = None
    for start, end, status in samples:
        if status == up_status:
            if down_since is not None:
                intervals.append((down_since, start))
                down_since = None
            last_up_end = end
        elif down_since is None:
            down_since = last_up_end if last_up_end is not None else float("-inf")
    if down_since is not None:
        intervals.append((down_since, float("inf")))
    return intervals


def test_down_intervals_widen_to_the_neighbouring_answers():
    lines = ["1.0 1.1 ok", "1.2 1.3 down", "1.4 1.5 down", "1.6 1.7 ok", "1.8 1.9 degraded"]
    assert down_intervals(lines, "ok") == [(1.1, 1.6), (1.7, float("inf"))]


def test_never_both_nodes_down(host: Any) -> None:
    # One test for the pair: it runs on the first service host only.
    if host_name(host) != SERVICE_HOSTS[0]:
        pytest.skip("checked once, from the first service host")
    logs = {}
    for name in SERVICE_HOSTS:
        node = testinfra.get_host(f"podman://{name}")
        if not node.file(LOG).exists:
            pytest.skip("no rolling restart in this converge (it runs once per scenario)")
        logs[name] = node.file(LOG).content_string.splitlines()
    downs = {
        name: down_intervals(lines, PLATFORMS[name].expected_status) for name, lines in logs.items()
    }
    for name, intervals in downs.items():
        # Each node did restart under the watcher: a window without its serving answer,
        # closed by an answer again.
        assert intervals, f"{name} never stopped answering: no restart was watched"
        assert intervals[-1][1] != float("inf"), f"{name} did not answer again"
        assert intervals[0][0] != float("-inf"), f"{name} was not serving when watching began"
    first, second = (downs[name] for name in SERVICE_HOSTS)
    overlaps = [(a, b) for a in first for b in second if a[0] < b[1] and b[0] < a[1]]
    assert not overlaps, f"both nodes down at once: {overlaps}"
