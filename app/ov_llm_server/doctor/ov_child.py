"""The doctor's child process: the only doctor module that imports OpenVINO.

A GPU plugin can crash its process while it initialises a driver it does not match; run here,
such a crash becomes a finding of the parent (``isolation.run_child``) instead of ending it.

    python -m ov_llm_server.doctor.ov_child devices
    python -m ov_llm_server.doctor.ov_child probe --model PATH --device GPU [--properties JSON]

The result is one JSON object on the original stdout; whatever native code prints goes to
stderr, so it cannot corrupt that object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

# Read from every device when the plugin has it (names as in SUPPORTED_PROPERTIES).
DEVICE_PROPERTIES = (
    "FULL_DEVICE_NAME",
    "DEVICE_TYPE",
    "DEVICE_ARCHITECTURE",
    "GPU_UARCH_VERSION",
    "GPU_DEVICE_ID",
    "GPU_DRIVER_VERSION",
    "GPU_EXECUTION_UNITS_COUNT",
    "GPU_DEVICE_TOTAL_MEM_SIZE",
    "GPU_DEVICE_MAX_ALLOC_MEM_SIZE",
    "OPTIMIZATION_CAPABILITIES",
)
# Plugins asked for their devices one by one, so that a plugin that fails to load (the GPU
# plugin without libOpenCL.so.1, say) is reported with its error.
PLUGINS = ("CPU", "GPU", "NPU")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple | set):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    name = getattr(value, "name", None)  # OpenVINO enums: Type.INTEGRATED -> "integrated"
    if isinstance(name, str):
        return name.lower()
    return str(value)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # OpenVINO puts "Exception from src/...cpp:117:" first and the reason after it.
    useful = [line for line in lines if not line.startswith("Exception from ")]
    return " ".join(useful or lines)[:500] or type(exc).__name__


def devices() -> dict[str, Any]:
    import openvino as ov

    core = ov.Core()
    plugins: dict[str, dict[str, Any]] = {}
    for plugin in PLUGINS:
        try:
            found = list(core.get_property(plugin, "AVAILABLE_DEVICES"))
        except Exception as exc:
            plugins[plugin] = {"loaded": False, "devices": 0, "error": _one_line(exc)}
        else:
            plugins[plugin] = {"loaded": True, "devices": len(found), "error": None}
    listed = []
    for name in core.available_devices:
        properties: dict[str, Any] = {}
        for key in DEVICE_PROPERTIES:
            try:
                properties[key] = _jsonable(core.get_property(name, key))
            except Exception:
                continue  # not a property of this plugin or version
        listed.append({"name": name, "properties": properties})
    return {"openvino_build": ov.get_version(), "plugins": plugins, "devices": listed}


def probe(
    model: str, device: str, properties: dict[str, Any], prompt: str, max_new_tokens: int
) -> dict[str, Any]:
    import openvino_genai as og

    started = time.monotonic()
    pipe = og.LLMPipeline(model, device, **properties)
    compiled = time.monotonic()
    tokenizer = pipe.get_tokenizer()
    config = og.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.do_sample = False
    text = prompt
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True
        )
        config.apply_chat_template = False  # templated here already
    except Exception:
        pass  # no chat template: the plain prompt
    result = pipe.generate([text], config)
    return {
        "text": result.texts[0],
        "tokens": int(result.perf_metrics.get_num_generated_tokens()),
        "compile_seconds": round(compiled - started, 3),
        "generate_seconds": round(time.monotonic() - compiled, 3),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ov_llm_server.doctor.ov_child")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("devices")
    run = sub.add_parser("probe")
    run.add_argument("--model", required=True)
    run.add_argument("--device", required=True)
    run.add_argument("--properties", default="{}", help="OpenVINO properties as JSON")
    run.add_argument("--prompt", required=True)
    run.add_argument("--max-new-tokens", type=int, default=24)
    return parser


def main(argv: list[str] | None = None) -> int:
    result_stream: TextIO = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "devices":
            result = devices()
        else:
            result = probe(
                args.model,
                args.device,
                json.loads(args.properties),
                args.prompt,
                args.max_new_tokens,
            )
    except Exception as exc:
        result = {"error": _one_line(exc)}
    json.dump(result, result_stream)
    result_stream.write("\n")
    result_stream.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
