"""The benchmark's report: targets, the Markdown tables, the PNG, the README sections."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import openvino_genai as og
from measure import LevelResult, percentile

from ov_llm_server.engine.core.precision import effective_precision

ROOT = Path(__file__).resolve().parent.parent

# Issue 15's targets.
COPY_EDIT_SPEEDUP = 2.0
CHAT_LOOKUP_RATIO = 0.95
WARM_COLD_TTFT_RATIO = 0.3
SERVER_DIRECT_RATIO = 0.95
# Issues 6 and 10's targets (chat, plain).
MULTI_STREAM_RATIO = 0.90
SCALING_RATIO = 2.5
TTFT_MARGIN_MS = 5.0
HEALTH_P99_MS = 50.0
MEMORY_RETURN_RATIO = 1.10

MODES = {
    "direct": "engine direct",
    "llm_pipeline": "LLMPipeline direct",
    "server": "server",
    "llama_server": "llama-server",
}
VARIANTS = {
    "plain": "plain",
    "kv_f16": "plain, f16 KV cache",
    "prompt_lookup": "prompt lookup",
    "draft": "draft model",
    "gguf": "GGUF",
}

Results = dict[tuple[str, str, str, int], LevelResult]


def find(results: Results, workload: str, variant: str, mode: str, c: int) -> LevelResult | None:
    return results.get((workload, variant, mode, c))


def _target(name: str, value: float, goal: str, met: bool, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": round(value, 3), "target": goal, "met": met, **extra}


def identity(results: Results, workload: str, variant: str, against: str) -> list[dict[str, Any]]:
    """How many requests generated exactly what ``against`` generated, per mode and level."""
    out = []
    for (w, v, mode, c), result in sorted(results.items()):
        base = find(results, workload, against, mode, c)
        if w != workload or v != variant or base is None or mode == "llm_pipeline":
            continue
        same = sum(a.output == b.output for a, b in zip(result.records, base.records, strict=True))
        out.append(
            {
                "workload": workload,
                "variant": variant,
                "against": against,
                "mode": mode,
                "concurrency": c,
                "requests": len(result.records),
                "identical": same,
            }
        )
    return out


def targets(
    results: Results, identities: list[dict[str, Any]], memory: dict[str, Any] | None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def ratio(workload: str, variant: str, mode: str, c: int, base_variant: str) -> float | None:
        a = find(results, workload, variant, mode, c)
        b = find(results, workload, base_variant, mode, c)
        return a.tokens_per_s / b.tokens_per_s if a and b else None

    for mode in ("direct", "server"):
        value = ratio("copy_edit", "prompt_lookup", mode, 1, "plain")
        if value is not None:
            same = [
                i
                for i in identities
                if (i["workload"], i["variant"], i["against"], i["mode"])
                == ("copy_edit", "prompt_lookup", "plain", mode)
            ]
            identical = all(i["identical"] == i["requests"] for i in same)
            out.append(
                _target(
                    f"copy/edit, {MODES[mode]}, 1 stream: tok/s with prompt lookup ÷ without, "
                    "greedy text identical",
                    value,
                    f">= {COPY_EDIT_SPEEDUP}, identical",
                    value >= COPY_EDIT_SPEEDUP and identical,
                    identical=", ".join(
                        f"{i['identical']}/{i['requests']} at {_streams(i['concurrency'])}"
                        for i in same
                    ),
                )
            )
        value = ratio("chat", "prompt_lookup", mode, 1, "plain")
        if value is not None:
            out.append(
                _target(
                    f"chat, {MODES[mode]}, 1 stream: tok/s with prompt lookup ÷ without",
                    value,
                    f">= {CHAT_LOOKUP_RATIO}",
                    value >= CHAT_LOOKUP_RATIO,
                )
            )
        prefix = find(results, "shared_prefix", "plain", mode, 1)
        if prefix and prefix.ttft_cold_p50_ms and prefix.ttft_warm_p50_ms:
            value = prefix.ttft_warm_p50_ms / prefix.ttft_cold_p50_ms
            out.append(
                _target(
                    f"shared prefix, {MODES[mode]}, 1 stream: TTFT p50 warm ÷ cold",
                    value,
                    f"<= {WARM_COLD_TTFT_RATIO}",
                    value <= WARM_COLD_TTFT_RATIO,
                )
            )
    for (workload, variant, mode, c), result in sorted(results.items()):
        direct = find(results, workload, variant, "direct", c)
        if (
            mode != "server"
            or direct is None
            or (c != 1 and (workload, variant) != ("chat", "plain"))
        ):
            continue
        value = result.tokens_per_s / direct.tokens_per_s
        goal = SERVER_DIRECT_RATIO if c == 1 else MULTI_STREAM_RATIO
        out.append(
            _target(
                f"{_workload_name(workload, variant)} ({VARIANTS[variant]}), "
                f"{_streams(c)}: "
                "server tok/s ÷ engine direct",
                value,
                f">= {goal}",
                value >= goal,
            )
        )
    out += _server_targets(results, memory)
    return out


def _server_targets(results: Results, memory: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 6 and 10's targets, on the chat workload without speculation."""
    out = []
    server = {
        c: r for (w, v, m, c), r in results.items() if (w, v, m) == ("chat", "plain", "server")
    }
    direct = {
        c: r for (w, v, m, c), r in results.items() if (w, v, m) == ("chat", "plain", "direct")
    }
    top = max(server, default=0)
    if 1 in server and top > 1:
        value = server[top].tokens_per_s / server[1].tokens_per_s
        out.append(
            _target(
                f"chat, server: {top}-stream tok/s ÷ single-stream",
                value,
                f">= {SCALING_RATIO}",
                value >= SCALING_RATIO,
            )
        )
    if 1 in server and 1 in direct:
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
            _target(
                "chat, 1 stream: server TTFT p50 − engine direct (ms)",
                gap,
                f"<= {TTFT_MARGIN_MS}",
                gap <= TTFT_MARGIN_MS,
                paired_median_ms=round(paired, 2),
            )
        )
    for c, result in sorted(server.items()):
        if result.health_p99_ms is not None and c == top:
            out.append(
                _target(
                    f"GET /health p99 while {c} streams generate (ms)",
                    result.health_p99_ms,
                    f"<= {HEALTH_P99_MS}",
                    result.health_p99_ms <= HEALTH_P99_MS,
                )
            )
    if memory is not None:
        value = memory["after_unload_mb"] / memory["before_load_mb"]
        out.append(
            _target(
                "service memory after an unload ÷ before the load (server + engines)",
                value,
                f"<= {MEMORY_RETURN_RATIO}",
                value <= MEMORY_RETURN_RATIO,
            )
        )
    return out


# ---------------------------------------------------------------- Markdown


def _streams(c: int) -> str:
    return f"{c} stream{'s' * (c > 1)}"


def _workload_name(workload: str, variant: str) -> str:
    return "draft (chat prompts)" if variant == "draft" else workload


def _f(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def markdown(report: dict[str, Any], results: Results, *, full: bool = True) -> str:
    m, s, machine = report["model"], report["settings"], report["machine"]
    lines = [
        f"Model: **{m['name']}** ({m['format']}), device {s['device']}, greedy; "
        f"{machine['cores']} cores ({machine['cpu']}, computing in "
        f"{machine.get('cpu_precision') or 'unknown'}), openvino-genai "
        f"{machine['openvino_genai']}, {report['date']}; load average "
        f"{machine['load_average_at_start'][0]} at the start, "
        f"{report['load_average_at_end'][0]} at the end; {report['duration_s'] / 60:.0f} min.",
        "",
        *_workload_table(results),
    ]
    if full:
        lines += ["", *_identity_lines(report), "", *_grammar_lines(results)]
        lines += ["", *_prefix_table(results), "", *_chat_table(report, results)]
        peer = _peer_table(report, results)
        if peer:
            lines += ["", *peer]
    lines += ["", "Targets:", ""]
    for target in report["targets"]:
        verdict = "met" if target["met"] else "**not met**"
        extra = ""
        if "paired_median_ms" in target:
            extra = f"; median of per-prompt differences {target['paired_median_ms']}"
        if "identical" in target:
            extra = f"; identical: {target['identical']}"
        lines.append(
            f"- {target['name']}: {target['value']} (target {target['target']}): {verdict}{extra}"
        )
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def _workload_table(results: Results) -> list[str]:
    lines = [
        "| workload | variant | mode | streams | tok/s | ÷ plain | ÷ direct | TTFT p50 / p90 (ms) "
        "| TPOT p50 (ms) | draft tokens accepted |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {w: i for i, w in enumerate(("chat", "copy_edit", "tool_call", "shared_prefix"))}
    variant_order = {v: i for i, v in enumerate(VARIANTS)}
    mode_order = {mode: i for i, mode in enumerate(MODES)}
    rows = sorted(
        (k for k in results if k[1] != "gguf" and k[3] <= 4),
        key=lambda k: (order.get(k[0], 9), k[3], variant_order[k[1]], mode_order[k[2]]),
    )
    for workload, variant, mode, c in rows:
        r = results[(workload, variant, mode, c)]
        plain = find(results, workload, "plain", mode, c)
        direct = find(results, workload, variant, "direct", c)
        name = _workload_name(workload, variant)
        acceptance = (
            f"{r.accepted_tokens}/{r.draft_tokens} = {r.acceptance:.0%}"
            if r.acceptance is not None
            else "–"
        )
        lines.append(
            f"| {name} | {VARIANTS[variant]} | {MODES[mode]} | {c} | {r.tokens_per_s:.1f} | "
            f"{_ratio(r, plain)} | {_ratio(r, direct)} | "
            f"{_f(r.ttft_p50_ms)} / {_f(r.ttft_p90_ms)} | {_f(r.tpot_p50_ms, 2)} | {acceptance} |"
        )
    return lines


def _identity_lines(report: dict[str, Any]) -> list[str]:
    lines = ["Greedy outputs identical, request by request (token ids; over HTTP, text):", ""]
    for i in report["identical_outputs"]:
        lines.append(
            f"- {i['workload']}, {VARIANTS[i['variant']]} against {VARIANTS[i['against']]}, "
            f"{MODES[i['mode']]}, {_streams(i['concurrency'])}: "
            f"{i['identical']} of {i['requests']}"
        )
    return lines


def _grammar_lines(results: Results) -> list[str]:
    """A forced tool call's cost per token: its TPOT against free chat's, engine direct (over
    HTTP a call's arguments arrive in one chunk, so its TPOT says nothing)."""
    lines = []
    for (w, v, mode, c), tool in sorted(results.items()):
        chat = find(results, "chat", "plain", mode, c)
        if (w, v, mode) != ("tool_call", "plain", "direct") or chat is None:
            continue
        lines.append(
            f"- {_streams(c)}: TPOT p50 {tool.tpot_p50_ms:.2f} ms with the grammar, "
            f"{chat.tpot_p50_ms:.2f} ms for free chat: "
            f"{tool.tpot_p50_ms - chat.tpot_p50_ms:+.2f} ms a token "
            f"(x{tool.tpot_p50_ms / chat.tpot_p50_ms:.2f})"
        )
    return (
        ["The grammar's cost per token (forced tool call against chat, engine direct):", "", *lines]
        if lines
        else []
    )


def _ratio(result: LevelResult, base: LevelResult | None) -> str:
    if base is None or base is result:
        return "–" if base is None else "1.00"
    return f"{result.tokens_per_s / base.tokens_per_s:.2f}"


def _prefix_table(results: Results) -> list[str]:
    rows = []
    for (w, _v, mode, c), r in sorted(results.items()):
        if w == "shared_prefix" and r.ttft_cold_p50_ms and r.ttft_warm_p50_ms:
            rows.append(
                f"| {MODES[mode]} | {c} | {_f(r.ttft_cold_p50_ms)} | "
                f"{_f(r.ttft_warm_p50_ms)} / {_f(r.ttft_warm_p90_ms)} | "
                f"{r.ttft_warm_p50_ms / r.ttft_cold_p50_ms:.3f} |"
            )
    if not rows:
        return []
    return [
        "Shared prefix (a ~2,270-token system prompt): TTFT of the first wave of each round "
        "(its prefix not cached yet) and of the requests after it.",
        "",
        "| mode | streams | cold TTFT p50 (ms) | warm TTFT p50 / p90 (ms) | warm ÷ cold |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ]


def _chat_table(report: dict[str, Any], results: Results) -> list[str]:
    lines = [
        "Chat without speculation, the server against the engine it wraps:",
        "",
        "| mode | streams | TTFT p50 (ms) | TPOT p50 (ms) | tok/s | ÷ direct | CPU ms/token "
        "| /health p50 / p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (w, v, mode, c), r in sorted(results.items(), key=lambda kv: (kv[0][2], kv[0][3])):
        if (w, v) != ("chat", "plain"):
            continue
        direct = find(results, w, v, "direct", c)
        cpu = _f(r.cpu_ms_per_token)
        if r.client_cpu_ms_per_token is not None:
            cpu += f" + {r.client_cpu_ms_per_token:.1f} client"
        health = (
            f"{r.health_p50_ms:.1f} / {r.health_p99_ms:.1f}" if r.health_p99_ms is not None else "–"
        )
        lines.append(
            f"| {MODES[mode]} | {c} | {_f(r.ttft_p50_ms)} | {_f(r.tpot_p50_ms, 2)} | "
            f"{r.tokens_per_s:.1f} | {_ratio(r, direct)} | {cpu} | {health} |"
        )
    extra = report.get("server_extra") or {}
    if extra:
        idle, hop = extra["idle_health_ms"], extra["engine_hop"]
        lines += [
            "",
            f"Idle `/health`: p50 {idle['p50']:.1f} ms, p99 {idle['p99']:.1f} ms. Process hop "
            f"(engine step output → HTTP process): mean {hop['mean_us']:.0f} µs over "
            f"{hop['steps']} step messages.",
        ]
        memory = extra.get("memory")
        if memory:
            lines.append(
                f"Service memory (server + engine processes, RSS): "
                f"{memory['before_load_mb']:.0f} MB before the load, {memory['loaded_mb']:.0f} "
                f"MB loaded, {memory['after_unload_mb']:.0f} MB after it unloaded."
            )
    return lines


def _peer_table(report: dict[str, Any], results: Results) -> list[str]:
    rows = sorted((k for k in results if k[1] == "gguf"), key=lambda k: (k[3], k[2]))
    if not rows:
        note = report.get("peer_note")
        return [f"llama-server: {note}"] if note else []
    lines = [
        f"The peer: llama.cpp's llama-server ({report.get('peer_version', '?')}, "
        "`--parallel 8`, continuous batching) and this server, both on the Q4_1 GGUF, chat:",
        "",
        "| mode | streams | tok/s | ÷ llama-server | TTFT p50 / p90 (ms) | TPOT p50 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for workload, variant, mode, c in rows:
        r = results[(workload, variant, mode, c)]
        peer = find(results, workload, variant, "llama_server", c)
        lines.append(
            f"| {MODES[mode]} | {c} | {r.tokens_per_s:.1f} | {_ratio(r, peer)} | "
            f"{_f(r.ttft_p50_ms)} / {_f(r.ttft_p90_ms)} | {_f(r.tpot_p50_ms, 2)} |"
        )
    return lines


# ---------------------------------------------------------------- PNG


def plot(report: dict[str, Any], results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), constrained_layout=True)
    levels = report["settings"]["concurrency"]["others"][:2]
    for axis, c in zip(axes[0], levels, strict=False):
        _bars(axis, results, c)
    _scaling(axes[1][0], results)
    _prefix(axes[1][1], results)
    fig.suptitle(
        f"{report['model']['name']} ({report['model']['format']}), {report['date']}, "
        f"load {report['machine']['load_average_at_start'][0]}",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(axis: Any, results: Results, c: int) -> None:
    groups = [
        (w, v)
        for w, v in (
            ("chat", "plain"),
            ("chat", "kv_f16"),
            ("chat", "prompt_lookup"),
            ("chat", "draft"),
            ("copy_edit", "plain"),
            ("copy_edit", "kv_f16"),
            ("copy_edit", "prompt_lookup"),
            ("tool_call", "plain"),
            ("shared_prefix", "plain"),
        )
        if any(k[:2] == (w, v) and k[3] == c for k in results)
    ]
    width = 0.4
    for offset, mode in ((-width / 2, "direct"), (width / 2, "server")):
        values = [
            (r.tokens_per_s if (r := find(results, w, v, mode, c)) else 0.0) for w, v in groups
        ]
        axis.bar([i + offset for i in range(len(groups))], values, width, label=MODES[mode])
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels([f"{w}\n{VARIANTS[v]}" for w, v in groups], fontsize=7)
    axis.set_title(f"Output tokens per second, {_streams(c)}", fontsize=10)
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8)


def _scaling(axis: Any, results: Results) -> None:
    lines: Iterable[tuple[str, str, str]] = (
        ("plain", "direct", "engine direct (int8 IR)"),
        ("plain", "server", "server (int8 IR)"),
        ("gguf", "server", "server (Q4_1 GGUF)"),
        ("gguf", "llama_server", "llama-server (Q4_1 GGUF)"),
    )
    for variant, mode, label in lines:
        points = sorted(
            (k[3], r.tokens_per_s)
            for k, r in results.items()
            if k[0] == "chat" and k[1] == variant and k[2] == mode
        )
        if points:
            axis.plot(*zip(*points, strict=True), "o-", label=label)
    axis.set_xlabel("concurrent streams")
    axis.set_title("Chat: output tokens per second against streams", fontsize=10)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def _prefix(axis: Any, results: Results) -> None:
    labels, cold, warm = [], [], []
    for (w, _v, mode, c), r in sorted(results.items()):
        if w == "shared_prefix" and r.ttft_cold_p50_ms and r.ttft_warm_p50_ms:
            labels.append(f"{MODES[mode]}\n{_streams(c)}")
            cold.append(r.ttft_cold_p50_ms)
            warm.append(r.ttft_warm_p50_ms)
    positions = range(len(labels))
    axis.bar([p - 0.2 for p in positions], cold, 0.4, label="prefix not cached")
    axis.bar([p + 0.2 for p in positions], warm, 0.4, label="prefix cached")
    axis.set_xticks(list(positions))
    axis.set_xticklabels(labels, fontsize=8)
    axis.set_title("Shared prefix: time to first token, p50 (ms, log scale)", fontsize=10)
    axis.set_yscale("log")
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8)


# ---------------------------------------------------------------- files


def update_marked(path: Path, start: str, end: str, text: str) -> bool:
    """Replaces what lies between the ``start`` and ``end`` markers of ``path``."""
    content = path.read_text(encoding="utf-8")
    first, last = content.find(start), content.find(end)
    if first < 0 or last < first:
        return False
    content = content[: first + len(start)] + "\n" + text + "\n" + content[last:]
    path.write_text(content, encoding="utf-8")
    return True


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
        # What the CPU computes in by default (bf16 where it has bf16, else f32): the chat
        # figures depend on it; embeddings run in f32 on every CPU.
        "cpu_precision": effective_precision("CPU", None),
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
