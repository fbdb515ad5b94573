"""What the benchmark records of each request and each level, and how levels are run fairly.

A *level* is one way of generating (a mode: direct engine, server, llama-server; and a
variant: plain, prompt lookup, a draft model ...) at one number of concurrent streams on one
workload. :func:`run_level` runs several ways on the same prompts in rounds whose order
alternates, so that a noisy neighbour on a shared machine weighs on every way alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import workloads


@dataclass
class RequestRecord:
    index: int  # position in its round's request list (the order it was sent in)
    first_s: float  # first output, seconds after the request was sent: the TTFT
    last_s: float  # last output, seconds after the request was sent
    tokens: int
    # What was generated, to check that speculation changed nothing: token ids (direct
    # engine) or text and tool-call arguments (over HTTP).
    output: tuple[Any, ...] = ()
    cold: bool = False  # shared prefix: sent before any request of its prefix finished

    @property
    def tpot_s(self) -> float | None:
        return (self.last_s - self.first_s) / (self.tokens - 1) if self.tokens > 1 else None


@dataclass
class Clock:
    """Wall time, CPU time of the generating process and of this one, and draft tokens."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float | None = None
    draft_tokens: int = 0
    accepted_tokens: int = 0

    def __add__(self, other: Clock) -> Clock:
        client = None
        if self.client_cpu_s is not None or other.client_cpu_s is not None:
            client = (self.client_cpu_s or 0.0) + (other.client_cpu_s or 0.0)
        return Clock(
            self.wall_s + other.wall_s,
            self.cpu_s + other.cpu_s,
            client,
            self.draft_tokens + other.draft_tokens,
            self.accepted_tokens + other.accepted_tokens,
        )


@dataclass
class LevelResult:
    workload: str
    variant: str
    mode: str
    concurrency: int
    requests: int
    wall_s: float
    tokens: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    tpot_p50_ms: float
    tokens_per_s: float
    # CPU time of the process that generated (the server and its engines, or this one for
    # direct modes) and, over HTTP, of this process as the client, per output token.
    cpu_ms_per_token: float | None
    client_cpu_ms_per_token: float | None
    # Speculative decoding: draft tokens proposed (prompt lookup: positions validated),
    # accepted, and their ratio.
    draft_tokens: int = 0
    accepted_tokens: int = 0
    acceptance: float | None = None
    # Shared prefix: TTFT of the requests sent before their prefix was cached, and after.
    ttft_cold_p50_ms: float | None = None
    ttft_warm_p50_ms: float | None = None
    ttft_warm_p90_ms: float | None = None
    # /health latency while the level's streams generate (this server only).
    health_p50_ms: float | None = None
    health_p99_ms: float | None = None
    health_max_ms: float | None = None
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    health_ms: list[float] = field(default_factory=list, repr=False)
    clock: Clock = field(default_factory=Clock, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("records", "clock", "health_ms"):
            out.pop(key)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarise(
    key: tuple[str, str, str],
    concurrency: int,
    clock: Clock,
    records: list[RequestRecord],
    health_ms: list[float] | None = None,
) -> LevelResult:
    """``key``: (workload, variant, mode)."""
    ttfts = [r.first_s * 1000 for r in records]
    tpots = [r.tpot_s * 1000 for r in records if r.tpot_s is not None]
    cold = [r.first_s * 1000 for r in records if r.cold]
    warm = [r.first_s * 1000 for r in records if not r.cold]
    tokens = sum(r.tokens for r in records)
    workload, variant, mode = key
    return LevelResult(
        workload=workload,
        variant=variant,
        mode=mode,
        concurrency=concurrency,
        requests=len(records),
        wall_s=clock.wall_s,
        tokens=tokens,
        ttft_p50_ms=percentile(ttfts, 0.5),
        ttft_p90_ms=percentile(ttfts, 0.9),
        tpot_p50_ms=percentile(tpots, 0.5),
        tokens_per_s=tokens / clock.wall_s,
        cpu_ms_per_token=clock.cpu_s * 1000 / tokens if clock.cpu_s else None,
        client_cpu_ms_per_token=(
            clock.client_cpu_s * 1000 / tokens if clock.client_cpu_s is not None else None
        ),
        draft_tokens=clock.draft_tokens,
        accepted_tokens=clock.accepted_tokens,
        acceptance=clock.accepted_tokens / clock.draft_tokens if clock.draft_tokens else None,
        ttft_cold_p50_ms=percentile(cold, 0.5) if cold else None,
        ttft_warm_p50_ms=percentile(warm, 0.5) if cold and warm else None,
        ttft_warm_p90_ms=percentile(warm, 0.9) if cold and warm else None,
        health_p50_ms=percentile(health_ms, 0.5) if health_ms else None,
        health_p99_ms=percentile(health_ms, 0.99) if health_ms else None,
        health_max_ms=max(health_ms) if health_ms else None,
        records=records,
        clock=clock,
        health_ms=health_ms or [],
    )


def record(index: int, sent: float, stamps: list[float], output: tuple[Any, ...]) -> RequestRecord:
    """A request from the times (perf_counter) its tokens arrived."""
    if not stamps:
        raise RuntimeError("a request produced no tokens")
    return RequestRecord(index, stamps[0] - sent, stamps[-1] - sent, len(stamps), output)


# A way of generating: (the round's requests, streams, the round's salt) -> its result.
Runner = Callable[[list[workloads.Request], int, str], LevelResult]


@dataclass(frozen=True)
class Plan:
    """How one workload runs at one level: its requests split into rounds, each salted so
    that no KV block is shared where the workload means none to be."""

    rounds: list[list[workloads.Request]]
    salt: Callable[[int, str], str]  # (round, runner key) -> salt
    cold_first: bool = False  # the first wave of each round runs with its prefix uncached


def run_level(
    workload: str, runners: dict[tuple[str, str], Runner], plan: Plan, concurrency: int
) -> dict[tuple[str, str], LevelResult]:
    """Each runner ((variant, mode) -> Runner) runs the plan's rounds; the order of the
    runners alternates from round to round (A B C, C B A, ...)."""
    clocks = {key: Clock() for key in runners}
    records: dict[tuple[str, str], list[RequestRecord]] = {key: [] for key in runners}
    health: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    for index, requests in enumerate(plan.rounds):
        order = list(runners) if index % 2 == 0 else list(reversed(runners))
        for key in order:
            salt = plan.salt(index, "/".join(key))
            salted = salt_requests(requests, salt)
            result = runners[key](salted, concurrency, salt)
            for rec in result.records:
                rec.cold = plan.cold_first and rec.index < concurrency
            clocks[key] += result.clock
            records[key].extend(sorted(result.records, key=lambda r: r.index))
            health[key].extend(result.health_ms)
    return {
        key: summarise((workload, *key), concurrency, clocks[key], records[key], health[key])
        for key in runners
    }


def salt_requests(requests: list[workloads.Request], salt: str) -> list[workloads.Request]:
    return [workloads.salt_request(request, salt) for request in requests]


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants (the server and its engine processes)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants, all threads."""
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def process_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, in MB."""
    total = 0
    for process in process_tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 1e6
