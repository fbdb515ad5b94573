"""Generation over HTTP: this server (started here, with a registry), and llama.cpp's
``llama-server``, streamed with the same client (:mod:`openai_stream`).

While this server's streams run at ``probe_at`` streams (the top level, where the /health
target is), ``GET /health`` is asked every ``HEALTH_PROBE_INTERVAL_S`` on its own connection.
Not at the other levels: twenty probes a second cost about 1.5 ms of CPU each (server and
client), on the two cores the engine computes on, which is a few per cent of single-stream
throughput that the engine-direct runs do not pay. ``/metrics`` gives the engine hop and the
draft-token counters.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import workloads
from measure import Clock, LevelResult, RequestRecord, process_cpu_s, process_rss_mb, summarise
from openai_stream import StreamResult, chat_body, stream_chat

ROOT = Path(__file__).resolve().parent.parent
HEALTH_PROBE_INTERVAL_S = 0.05
TIMEOUT_S = 600.0


def start_server(workdir: Path, registry: dict[str, dict[str, Any]], env: dict[str, str]) -> Any:
    """A live ``ov-llm-server`` (tests/live_server.py) serving ``registry``."""
    sys.path.insert(0, str(ROOT / "tests"))
    live_server = importlib.import_module("live_server")
    registry_path = workdir / "registry.json"
    live_server.write_registry(registry_path, registry)
    return live_server.LiveServer(
        workdir, {"OV_DEVICE": "CPU", "OV_REGISTRY_PATH": str(registry_path), **env}
    ).start()


class HttpRunner:
    """Streams a workload's requests to an OpenAI-compatible server, ``c`` at a time, one
    HTTP/1.1 connection per stream. ``pid``: the server process, for its CPU time;
    ``this_server``: its /metrics, and /health probed at ``probe_at`` streams."""

    def __init__(
        self,
        base_url: str,
        model: str,
        key: tuple[str, str],
        pid: int | None = None,
        *,
        this_server: bool = True,
        probe_at: int | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.key = key
        self.pid = pid
        self.this_server = this_server
        self.probe_at = probe_at

    def runner(self, workload: workloads.Workload) -> Any:
        def run(requests: list[workloads.Request], concurrency: int, _salt: str) -> LevelResult:
            bodies = [
                chat_body(
                    self.model,
                    list(r.messages),
                    workload.max_tokens,
                    ignore_eos=workload.ignore_eos,
                    **{k: v for k, v in r.openai_fields().items() if k != "messages"},
                )
                for r in requests
            ]
            return asyncio.run(self.level(bodies, concurrency, workload.name))

        return run

    async def level(
        self, bodies: list[dict[str, Any]], concurrency: int, workload: str
    ) -> LevelResult:
        queue = deque(enumerate(bodies))
        records: list[RequestRecord] = []
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        timeout = httpx.Timeout(TIMEOUT_S)
        clients = [
            httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=timeout)
            for _ in range(concurrency)
        ]
        prober = httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=timeout)
        try:
            # Open every connection before the clock starts.
            await asyncio.gather(*(c.get("/health") for c in [*clients, prober]))
            drafts = spec_counters(self.base_url, self.model) if self.this_server else (0, 0)

            async def worker(client: httpx.AsyncClient) -> None:
                while queue:
                    index, body = queue.popleft()
                    records.append(_record(index, await stream_chat(client, body)))

            done = asyncio.Event()
            cpu, server_cpu = time.process_time(), self._server_cpu()
            started = time.perf_counter()
            probing = self.this_server and concurrency == self.probe_at
            probe = asyncio.create_task(health_probe(prober, done)) if probing else None
            await asyncio.gather(*(worker(client) for client in clients))
            wall = time.perf_counter() - started
            done.set()
            health_ms = await probe if probe is not None else []
            after = spec_counters(self.base_url, self.model) if self.this_server else (0, 0)
            clock = Clock(
                wall_s=wall,
                cpu_s=self._server_cpu() - server_cpu,
                client_cpu_s=time.process_time() - cpu,
                draft_tokens=after[0] - drafts[0],
                accepted_tokens=after[1] - drafts[1],
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in [*clients, prober]))
        return summarise((workload, *self.key), concurrency, clock, records, health_ms)

    def _server_cpu(self) -> float:
        return process_cpu_s(self.pid) if self.pid is not None else 0.0


def _record(index: int, result: StreamResult) -> RequestRecord:
    if result.completion_tokens is None:
        raise RuntimeError("the stream carried no usage")
    return RequestRecord(
        index,
        result.ttft_s,
        result.last_s,
        result.completion_tokens,
        (result.text, result.tool_arguments),
    )


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


async def idle_health_ms(base_url: str, count: int = 20) -> list[float]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        await client.get("/health")
        done = asyncio.Event()
        probe = asyncio.create_task(health_probe(client, done))
        await asyncio.sleep(count * HEALTH_PROBE_INTERVAL_S)
        done.set()
        return await probe


def _metric(text: str, name: str, model: str | None = None) -> float:
    label = f'{{model="{re.escape(model)}"}}' if model is not None else ""
    found = re.search(rf"^{name}{label} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def spec_counters(base_url: str, model: str) -> tuple[int, int]:
    """``ov_spec_draft_tokens_total`` and ``ov_spec_accepted_tokens_total`` of ``model``."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return (
        int(_metric(text, "ov_spec_draft_tokens_total", model)),
        int(_metric(text, "ov_spec_accepted_tokens_total", model)),
    )


def engine_hop(base_url: str) -> dict[str, Any]:
    """Mean time from an engine's step output to the HTTP process reading it (/metrics)."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    count = _metric(text, "ov_engine_hop_seconds_count")
    total = _metric(text, "ov_engine_hop_seconds_sum")
    mean = total / count if count else float("nan")
    return {"steps": int(count), "mean_us": round(mean * 1e6, 1)}


def health(base_url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base_url}/health", timeout=30).json()
    return body


def measure_memory(
    workdir: Path, model: Path, env: dict[str, str], workload: workloads.Workload
) -> dict[str, Any]:
    """Memory of the service (server + engine processes) before a load, loaded, unloaded."""
    registry = {"bench": {"path": str(model), "task": "text-generation-with-past"}}
    server = start_server(workdir, registry, {**env, "OV_IDLE_UNLOAD_SECONDS": "2"})
    try:
        pid = server.process.pid
        time.sleep(1.0)
        before = process_rss_mb(pid)
        body = chat_body("bench", list(workload.requests[0].messages), 16)
        asyncio.run(
            HttpRunner(server.base_url, "bench", ("plain", "server"), pid).level(
                [body], 1, "memory"
            )
        )
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
                "--subprocesses",
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
