"""The three generation doors against each other: chat completions, Responses, Messages.

The Responses API (``/v1/responses``) and Anthropic's Messages API (``/v1/messages``) are views
over the chat path (serving/chat_view.py): the same engine, the same tokens. What they add is
translation per event on the HTTP side. This measures that cost from outside: the ``chat``
workload's prompts, streamed through each door with ``c`` requests in flight (each sent when
one returns), on one server, greedy, ``max_tokens`` 128. Rounds rotate the doors' order, and
every door, level and round gets its own prompt salt, so that no door gains from another's
prefix cache or from a quieter minute.

Per door and level: output tokens per second (the answers' usage over the level's wall time),
time to first token (the first text event), and that door ÷ chat completions. The target is
at least 0.97 for tokens per second at 1 and 8 streams.

    python bench/doors.py [--model IR_FOLDER] [--concurrency 1 8] [--rounds 3]
                          [--requests 16] [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import workloads
from report import git_commit, machine_info
from run import resolve_model
from served import start_server

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.doors")

DEFAULT_OUT = ROOT / "bench" / "results"
SERVED = "bench-doors"
MAX_TOKENS = 128
TARGET = 0.97
DOORS = ("chat", "responses", "messages")


def _chat(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {
        "model": SERVED,
        "messages": messages,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _responses(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return "/v1/responses", {
        "model": SERVED,
        "input": messages,
        "max_output_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "store": False,
    }


def _messages(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    return "/v1/messages", {
        "model": SERVED,
        "messages": [m for m in messages if m["role"] != "system"],
        **({"system": system} if system else {}),
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }


BODIES: dict[str, Callable[[list[dict[str, Any]]], tuple[str, dict[str, Any]]]] = {
    "chat": _chat,
    "responses": _responses,
    "messages": _messages,
}


def _read(door: str, event: dict[str, Any]) -> tuple[bool, int | None]:
    """(whether the event carries output text, the answer's output tokens if it says)."""
    if door == "chat":
        usage = event.get("usage") or {}
        text = any((c.get("delta") or {}).get("content") for c in event.get("choices", ()))
        return text, usage.get("completion_tokens")
    kind = event.get("type")
    if door == "responses":
        if kind in ("response.completed", "response.incomplete"):
            return False, event["response"]["usage"]["output_tokens"]
        return kind == "response.output_text.delta", None
    if kind == "message_delta":
        return False, event["usage"]["output_tokens"]
    return kind == "content_block_delta" and event["delta"].get("type") == "text_delta", None


async def _one(
    client: httpx.AsyncClient, door: str, messages: list[dict[str, Any]]
) -> tuple[float, int]:
    """Streams one request through ``door``: (time to first text, output tokens)."""
    path, body = BODIES[door](messages)
    sent = time.perf_counter()
    first: float | None = None
    tokens: int | None = None
    buffer = b""
    async with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{door}: HTTP {response.status_code}: {await response.aread()!r}")
        async for data in response.aiter_raw():
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for raw in events:
                for line in raw.split(b"\n"):
                    if not line.startswith(b"data: {"):
                        continue
                    text, used = _read(door, json.loads(line[6:]))
                    if text and first is None:
                        first = time.perf_counter() - sent
                    tokens = used if used is not None else tokens
    if first is None or tokens is None:
        raise RuntimeError(f"{door}: the stream carried no text or no usage")
    return first, tokens


async def _level(
    base_url: str, door: str, requests: list[workloads.Request], concurrency: int
) -> dict[str, Any]:
    queue = list(requests)
    ttfts: list[float] = []
    tokens = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal tokens
        while queue:
            request = queue.pop()
            ttft, used = await _one(client, door, [dict(m) for m in request.messages])
            ttfts.append(ttft)
            tokens += used

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "tokens": tokens, "ttfts": ttfts}


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    workload = workloads.load("chat")
    workdir = Path(tempfile.mkdtemp(prefix="bench-doors-"))
    registry = {SERVED: {"path": str(model), "task": "text-generation-with-past"}}
    server = start_server(workdir, registry, {"OV_MAX_NUM_SEQS": str(max(args.concurrency))})
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        warm = workload.salted("warm").take(2)
        for door in DOORS:
            asyncio.run(_level(server.base_url, door, warm, 1))
        for round_ in range(args.rounds):
            order = DOORS[round_ % 3 :] + DOORS[: round_ % 3]
            for concurrency in args.concurrency:
                for door in order:
                    salted = workload.salted(f"{door}-{concurrency}-{round_}")
                    requests = salted.take(max(args.requests, concurrency))
                    run = asyncio.run(_level(server.base_url, door, requests, concurrency))
                    runs.setdefault((door, concurrency), []).append(run)
                    log.info(
                        "round %d, %d streams, %s: %.1f tok/s",
                        round_,
                        concurrency,
                        door,
                        run["tokens"] / run["wall_s"],
                    )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    levels = []
    for concurrency in args.concurrency:
        chat = _summary(runs[("chat", concurrency)])
        for door in DOORS:
            summary = _summary(runs[(door, concurrency)])
            summary |= {
                "door": door,
                "concurrency": concurrency,
                "ratio_tokens_per_s": round(summary["tokens_per_s"] / chat["tokens_per_s"], 3),
                "ttft_minus_chat_ms": round(summary["ttft_p50_ms"] - chat["ttft_p50_ms"], 1),
            }
            levels.append(summary)
    return {"levels": levels}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tokens = sum(r["tokens"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    ttfts = [t for r in runs for t in r["ttfts"]]
    return {
        "requests": len(ttfts),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_ms": round(1000 * statistics.median(ttfts), 1),
    }


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"Model: {report['model']['name']} ({report['model']['format']}), device CPU, "
        f"greedy, max_tokens {MAX_TOKENS}, {report['rounds']} rounds, {machine['cores']} cores "
        f"({machine['cpu']}), {report['date']}, load average at start "
        f"{machine['load_average_at_start'][0]}, commit {report['git_commit']}.",
        "",
        "| streams | door | requests | output tokens | tok/s | ÷ chat | TTFT p50 ms "
        "| TTFT − chat ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level in report["levels"]:
        lines.append(
            f"| {level['concurrency']} | {level['door']} | {level['requests']} "
            f"| {level['tokens']} | {level['tokens_per_s']} | {level['ratio_tokens_per_s']:.3f} "
            f"| {level['ttft_p50_ms']} | {level['ttft_minus_chat_ms']} |"
        )
    worst = min(lv["ratio_tokens_per_s"] for lv in report["levels"] if lv["door"] != "chat")
    verdict = "met" if worst >= TARGET else "NOT met"
    lines += [
        "",
        f"Target: Responses and Messages tok/s ÷ chat completions >= {TARGET} at every level: "
        f"{verdict} (lowest {worst:.3f}). Output tokens are the answers' own usage; the doors "
        "give the same prompts to the same engine, so equal counts mean equal answers.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an OpenVINO IR folder (default: the bench SmolLM2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=16, help="per door, level and round")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, model_info = resolve_model(args.model)
    machine = machine_info()
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/doors.py " + " ".join(argv or []),
        "git_commit": git_commit(),
        "machine": machine,
        "model": model_info,
        "rounds": args.rounds,
        **measure(args, model),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "doors.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    table = markdown(report)
    (args.out / "doors.md").write_text(table + "\n", encoding="utf-8")
    sys.stdout.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
