"""The benchmark's report: JSON for machines, Markdown to paste into an issue."""

from __future__ import annotations

import statistics
from typing import Any

from .roofline import TARGET_BANDWIDTH, TARGET_HOST, ceiling
from .worker import STREAMS

SCHEMA_VERSION = 1


def _decode(rate: float | None, weights: int | None, streams: int) -> dict[str, Any]:
    roof = ceiling(weights, streams) if weights else None
    return {
        "tokens_per_second": rate,
        "roofline_tokens_per_second": roof,
        "roofline_fraction": rate / roof if rate is not None and roof else None,
    }


def result_entry(
    model: str, path: str, device: str, weights: int | None, run: dict[str, Any]
) -> dict[str, Any]:
    """One model on one device, from the worker's answer (or its error)."""
    entry: dict[str, Any] = {
        "model": model,
        "path": path,
        "device": device,
        "device_name": run.get("device_name"),
        "device_precision": run.get("device_precision"),
        "weight_bytes": weights,
        "error": run.get("error"),
    }
    if entry["error"] is None:
        entry.update(
            load_seconds=run["load_seconds"],
            ttft_seconds=statistics.median(run["ttft_seconds"]),
            ttft_seconds_runs=run["ttft_seconds"],
            decode_1_stream=_decode(run["decode_1_stream"], weights, 1),
            decode_1_stream_runs=run["decode_1_stream_runs"],
            decode_4_streams=_decode(run["decode_4_streams"], weights, STREAMS),
            peak_rss_bytes=run["peak_rss_bytes"],
        )
    return entry


def roofline_dict() -> dict[str, Any]:
    return {
        "host": TARGET_HOST,
        "bandwidth_bytes_per_second": TARGET_BANDWIDTH,
        "note": "the target host's roofline, not this machine's (whose bandwidth is unknown): "
        "decode tok/s <= bandwidth / bytes of weights read per token; at N streams one read "
        "serves N tokens",
    }


def _rate(decode: dict[str, Any]) -> str:
    text = f"{decode['tokens_per_second']:.1f}"
    if decode["roofline_fraction"] is not None:
        text += (
            f" ({decode['roofline_fraction']:.1%} of {decode['roofline_tokens_per_second']:,.0f})"
        )
    return text


def _engine(config: dict[str, Any]) -> str:
    return (
        f"max_batch {config['max_batch']}, KV cache precision "
        f"{config['kv_cache_precision'] or 'the device default'}, KV cache "
        + (f"{config['kv_cache_gb']} GB" if config["kv_cache_gb"] else "grown on demand")
        + ", no speculative decoding"
    )


def _size(value: int | None) -> str:
    return "?" if value is None else f"{value / 1e6:,.1f} MB"


def markdown(report: dict[str, Any]) -> str:
    host, work, roof = report["host"], report["workload"], report["roofline"]
    lines = [
        "# ov-llm-server bench",
        "",
        f"`{report['command']}` at {report['created_at']}",
        "",
        f"- Host: {host['cpu']}, {host['memory_gib']} GiB; {host['os']}, kernel {host['kernel']}",
        f"- OpenVINO {host['openvino']}; "
        + ", ".join(f"{name} {version}" for name, version in host["python_packages"].items()),
        f"- CPU inference precision: {host['cpu_precision']}",
        f"- Load average (1 min) before and after: {host['load_average'][0]:g}, "
        f"{host['load_average'][1]:g} on {host['cpu_count']} logical CPUs",
        f"- Devices: {', '.join(host['devices'])}",
        f"- Workload: {work['prompts']} chat prompts, {work['max_tokens']} new tokens each "
        "(greedy, end of text ignored) through the server's own pipeline (`build_pipeline`: "
        f"{_engine(work['engine_config'])}), one at a time; then {STREAMS} at once. TTFT and "
        "1-stream decode are medians over the prompts. Peak RSS: the high-water mark of the "
        "process that ran the pipeline, interpreter and OpenVINO included (GPU buffers that "
        "the driver maps may not count).",
        f"- Roofline: the target host's ({roof['host']}: "
        f"{roof['bandwidth_bytes_per_second'] / 1e9:.1f} GB/s): decode tok/s <= bandwidth / "
        f"bytes of weights read per token (the weight file's size); {STREAMS} streams share "
        "each read. The percentages compare with that ceiling; this machine's own bandwidth "
        "is unknown.",
        "",
        f"| model | device | weights | load s | TTFT ms | decode tok/s, 1 stream (% of "
        f"roofline) | decode tok/s, {STREAMS} streams (% of roofline) | peak RSS MiB |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    failures = []
    for entry in report["results"]:
        if entry["error"] is not None:
            failures.append(f"- {entry['model']} on {entry['device']}: {entry['error']}")
            continue
        lines.append(
            f"| {entry['model']} | {entry['device']} ({entry['device_precision']}) "
            f"| {_size(entry['weight_bytes'])} | {entry['load_seconds']:.2f} "
            f"| {entry['ttft_seconds'] * 1000:.0f} | {_rate(entry['decode_1_stream'])} "
            f"| {_rate(entry['decode_4_streams'])} "
            f"| {entry['peak_rss_bytes'] / 2**20:,.0f} |"
        )
    if failures:
        lines += ["", "Failed:", *failures]
    return "\n".join(lines) + "\n"
