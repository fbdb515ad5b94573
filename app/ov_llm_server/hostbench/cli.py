"""``ov-llm-server bench``: how fast this host serves each model, on each usable device."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from ..capabilities import engine_kind
from ..doctor.diagnose import list_devices
from ..doctor.facts import cpu_and_memory, os_name, python_packages
from ..doctor.verdict import device_available
from ..engine.messages import EngineConfig
from ..placement import engine_config
from ..registry import ModelEntry, RegistryError, read_registry, resolve_model_path
from ..settings import Settings
from . import report
from .roofline import weight_bytes
from .worker import STREAMS

WORKER_MODULE = "ov_llm_server.hostbench.worker"
REPORT_NAME = "ov-llm-server-bench"
# The devices benchmarked by default, in this order, where OpenVINO lists them.
DEFAULT_DEVICES = ("GPU", "CPU")
EXIT_OK, EXIT_FAILED, EXIT_NOTHING = 0, 1, 2

DESCRIPTION = """\
Time each registry model (or --model) on each device OpenVINO lists here (GPU, CPU): load
time, time to first token, decode tok/s at 1 and 4 streams beside the target host's memory
roofline, and the peak RSS of the pipeline's process. A short fixed workload through the
server's own pipeline, each run in its own process; progress on stderr; a Markdown and a JSON
report in --output (ov-llm-server-bench.md, .json) to paste into an issue.
"""


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    entry: ModelEntry | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model", metavar="NAME|PATH", help="one registry model, or a model's path"
    )
    parser.add_argument(
        "--device",
        action="append",
        metavar="DEVICE",
        help="device to run on, repeatable (default: GPU and CPU, where OpenVINO lists them)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path.cwd(), metavar="DIR", help="where the reports go"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=64, help="new tokens per request (default 64)"
    )
    parser.add_argument("--prompts", type=int, default=3, help="prompts at 1 stream (default 3)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds each model and device gets, compile included (default 900)",
    )


def choose_models(settings: Settings, wanted: str | None) -> list[Model]:
    """The generative models to time: ``wanted`` (a registry name or a path), else every
    registry model that the server runs as a generative one, else OV_MODEL_PATH."""
    try:
        entries = read_registry(settings.registry_path).models
    except RegistryError as exc:
        if wanted is None:
            raise
        sys.stderr.write(f"ov-llm-server bench: {exc}; taking --model as a path\n")
        entries = {}
    if wanted is not None:
        entry = entries.get(wanted)
        if entry is not None:
            return [Model(wanted, resolve_model_path(settings.registry_path, entry), entry)]
        path = Path(wanted).expanduser()
        return [Model(path.stem if path.suffix == ".gguf" else path.name, path)]
    models = [
        Model(name, resolve_model_path(settings.registry_path, entry), entry)
        for name, entry in sorted(entries.items())
        if engine_kind(entry.task) == "llm"
    ]
    if not models and settings.model_path is not None:
        models.append(Model(settings.fallback_model_name() or "model", settings.model_path))
    return models


def choose_devices(wanted: list[str] | None, listed: list[str]) -> list[str]:
    if wanted:
        return wanted
    return [device for device in DEFAULT_DEVICES if device_available(device, listed)]


def run_worker(model: Model, config: EngineConfig, args: argparse.Namespace) -> dict[str, Any]:
    """The worker's answer; its progress lines go straight to this process's stderr."""
    command = [
        sys.executable,
        "-m",
        WORKER_MODULE,
        "--model",
        str(model.path),
        "--config",
        msgspec.json.encode(config).decode(),
        "--max-tokens",
        str(args.max_tokens),
        "--prompts",
        str(args.prompts),
    ]
    try:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {args.timeout:g} s"}
    if done.returncode < 0:
        return {"error": f"crashed with {signal.Signals(-done.returncode).name}"}
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": f"the worker exited with status {done.returncode} and no result"}
    return answer if isinstance(answer, dict) else {"error": "the worker answered nonsense"}


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this run (without --output, which is this host's own)."""
    words = ["ov-llm-server", "bench"]
    if args.model:
        words += ["--model", args.model]
    for device in args.device or []:
        words += ["--device", device]
    words += ["--max-tokens", str(args.max_tokens), "--prompts", str(args.prompts)]
    return shlex.join(words)


def progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_tokens < 2 or args.prompts < 1:
        progress("ov-llm-server bench: --max-tokens must be 2 or more, --prompts 1 or more")
        return EXIT_NOTHING
    try:
        models = choose_models(settings, args.model)
    except RegistryError as exc:
        progress(f"ov-llm-server bench: {exc}")
        return EXIT_NOTHING
    missing = [m for m in models if not m.path.exists()]
    if not models or missing:
        progress(
            "ov-llm-server bench: "
            + (
                f"no such model: {', '.join(str(m.path) for m in missing)}"
                if missing
                else "no model to time: the registry lists no generative model and "
                "OV_MODEL_PATH is unset (or pass --model NAME|PATH)"
            )
        )
        return EXIT_NOTHING
    progress("listing OpenVINO's devices")
    listed = list_devices(timeout=60.0)
    devices = choose_devices(args.device, listed.names)
    if not devices:
        progress(f"ov-llm-server bench: no device to run on ({listed.error or 'none listed'})")
        return EXIT_NOTHING
    names = {
        str(d["name"]): str(d.get("properties", {}).get("FULL_DEVICE_NAME", d["name"]))
        for d in listed.devices
    }
    load_before = os.getloadavg()[0]
    runs = [(model, device) for model in models for device in devices]
    results: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    for index, (model, device) in enumerate(runs, 1):
        progress(f"[{index}/{len(runs)}] {model.name} on {device}")
        answer = run_worker(model, engine_config(settings, device, "llm", model.entry), args)
        if "error" in answer:
            progress(f"    failed: {answer['error']}")
        else:
            first = first or answer
        weights = weight_bytes(model.path)
        results.append(report.result_entry(model.name, str(model.path), device, weights, answer))

    cpu, memory = cpu_and_memory()
    data = {
        "schema": report.SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(args),
        "host": {
            "cpu": cpu,
            "memory_gib": memory,
            "os": os_name(),
            "kernel": platform.release(),
            "cpu_count": os.cpu_count(),
            # Other work on the host slows every figure: the 1-minute load before and after.
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "openvino": first.get("openvino") or python_packages().get("openvino"),
            "python_packages": python_packages(),
            "cpu_precision": first.get("cpu_precision"),
            "devices": [f"{d} ({names.get(d, '?')})" for d in devices],
        },
        "workload": {
            "prompts": args.prompts,
            "max_tokens": args.max_tokens,
            "streams": [1, STREAMS],
            "engine_config": msgspec.to_builtins(engine_config(settings, "", "llm", None)),
        },
        "roofline": report.roofline_dict(),
        "results": results,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    json_path = args.output / f"{REPORT_NAME}.json"
    markdown_path = args.output / f"{REPORT_NAME}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    text = report.markdown(data)
    markdown_path.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    progress(f"wrote {markdown_path} and {json_path}")
    return EXIT_FAILED if any(r["error"] for r in results) else EXIT_OK
