"""Tiny models whose chat templates speak the tool-call formats of small agent models.

One tiny model (built with ``tiny_model``'s trainer) answers one prompt per format with a
call written in that format; its IR is then copied once per format with that format's chat
template, so the server detects each format from the template as it would for the real
family. The templates render a first turn exactly as the model was trained on; they differ
where the real templates do: in how they render past calls, which holds each format's marker.

Run ``python tests/tiny_formats.py`` to build (or find) the cache and print where it is.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import tiny_model
from tiny_model import building, default_cache_root, file_hash

FORECAST_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_forecast",
        "description": "The weather forecast of a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
TOOLS = [FORECAST_TOOL]

# format -> (question, answer, the calls the answer holds, the content beside them)
ANSWERS: dict[str, tuple[str, str, list[tuple[str, dict[str, Any]]], str]] = {
    "qwen3_coder": (
        "Forecast for Lyon please",
        "<tool_call>\n<function=get_forecast>\n<parameter=city>\nLyon\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n"
        "</function>\n</tool_call>",
        [("get_forecast", {"city": "Lyon", "days": 3, "metric": True})],
        "",
    ),
    "pythonic": (
        "Forecast for Oslo and Rome",
        '[get_forecast(city="Oslo", days=2), get_forecast(city="Rome", metric=False)]',
        [
            ("get_forecast", {"city": "Oslo", "days": 2}),
            ("get_forecast", {"city": "Rome", "metric": False}),
        ],
        "",
    ),
    "phi4_mini": (
        "Forecast for Kyiv",
        'Sure. <|tool_call|>[{"name": "get_forecast", "arguments": {"city": "Kyiv", "days": 5}}]'
        "<|/tool_call|>",
        [("get_forecast", {"city": "Kyiv", "days": 5})],
        "Sure.",
    ),
    "gemma3": (
        "Forecast for Bern",
        "Checking.\n```tool_code\nprint(get_forecast(city='Bern', days=4))\n```",
        [("get_forecast", {"city": "Bern", "days": 4})],
        "Checking.",
    ),
}

DIALOGUES: dict[str, dict[str, Any]] = {
    fmt: {"messages": [{"role": "user", "content": q}], "tools": TOOLS, "answer": a}
    for fmt, (q, a, _, _) in ANSWERS.items()
}

# How each template renders a past call (``fn`` the call, ``args`` its arguments' text): the
# part of the real templates that holds each format's marker.
_PAST_CALLS = {
    "plain": "{{- fn['name'] + ' ' + args -}}",
    "qwen3_coder": (
        "{{- '<tool_call>\\n<function=' + fn['name'] + '>\\n<parameter=arguments>\\n'"
        " + args + '\\n</parameter>\\n</function>\\n</tool_call>' -}}"
    ),
    "pythonic": (
        "{{- '[' + fn['name'] + '(' + args + ')]' -}}"
        "{#- taught as [func_name1(params_name1=params_value1, ...)] -#}"
    ),
    "phi4_mini": (
        "{{- '<|tool_call|>[{\"name\": \"' + fn['name'] + '\", \"arguments\": ' + args"
        " + '}]<|/tool_call|>' -}}{#- tools go between <|tool|> and <|/tool|> -#}"
    ),
    "gemma3": "{{- '```tool_code\\n' + fn['name'] + '(' + args + ')\\n```' -}}",
}


def chat_template(fmt: str) -> str:
    """A short ChatML template (short prompts train fast) showing the tools' names, with
    ``fmt``'s way of rendering past calls."""
    return (
        "{%- if tools -%}{{- '<|im_start|>system\\ntools:' -}}"
        "{%- for tool in tools -%}{{- ' ' + tool['function']['name'] -}}{%- endfor -%}"
        "{{- '<|im_end|>\\n' -}}{%- endif -%}"
        "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['content'] -%}{{- message['content'] -}}{%- endif -%}"
        "{%- set calls = message['tool_calls'] if message['tool_calls'] is defined"
        " and message['tool_calls'] else [] -%}"
        "{%- for call in calls -%}"
        "{%- set fn = call['function'] if call['function'] is defined else call -%}"
        "{%- set args = fn['arguments'] if fn['arguments'] is string"
        " else fn['arguments'] | tojson -%}" + _PAST_CALLS[fmt] + "{%- endfor -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def _copy_with_template(ir_dir: Path, out_dir: Path, template: str) -> None:
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    shutil.copytree(ir_dir, out_dir, dirs_exist_ok=True)
    tokenizer = ov.Core().read_model(ir_dir / "openvino_tokenizer.xml")
    tokenizer.set_rt_info(template, "chat_template")
    ov.save_model(tokenizer, out_dir / "openvino_tokenizer.xml", compress_to_fp16=False)
    (out_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config), encoding="utf-8")


def ensure_format_models(cache_root: Path | None = None) -> dict[str, Path]:
    """{format: IR folder} of the tiny model under each format's template, built once."""
    from filelock import FileLock

    key = file_hash(Path(__file__), Path(tiny_model.__file__))
    root = (cache_root or default_cache_root()) / f"tiny-formats-{key}"
    root.mkdir(parents=True, exist_ok=True)
    paths = {fmt: root / f"ir-{fmt}" for fmt in ANSWERS}
    with FileLock(str(root / ".lock"), timeout=1800):
        hf_dir, ir_dir = root / "hf", root / "ir"
        if not hf_dir.is_dir():
            with building(hf_dir) as tmp:
                tiny_model.build_hf_model(tmp, DIALOGUES, chat_template("plain"))
        if not ir_dir.is_dir():
            with building(ir_dir) as tmp:
                tiny_model._export_ir(hf_dir, tmp, "fp16")
        for fmt, path in paths.items():
            if not path.is_dir():
                with building(path) as tmp:
                    _copy_with_template(ir_dir, tmp, chat_template(fmt))
    return paths


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name, folder in ensure_format_models().items():
        sys.stdout.write(f"{name}: {folder}\n")
