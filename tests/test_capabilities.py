"""What a model does, read from its files (capabilities.py) and shown on /v1/models."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import httpx
import openvino_genai as og
import pytest

from live_server import LiveServer
from ov_llm_server.capabilities import card_facts, inspect_model
from ov_llm_server.registry import ModelEntry

PROBE_TOOL = {
    "type": "function",
    "function": {"name": "lookup_probe", "parameters": {"type": "object", "properties": {}}},
}

CHATML = (
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
)
# Qwen3's switch: thinking is on unless the caller turns it off.
SWITCH = (
    CHATML + "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}{%- endif -%}"
)
# DeepSeek-R1's generation prompt opens the think block itself.
OPENER = (
    CHATML
    + "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}{%- endif -%}"
)
# A template that replays earlier reasoning only.
REPLAY = (
    "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' -}}"
    "{%- if m['reasoning_content'] is defined and m['reasoning_content'] -%}"
    "{{- '<think>' + m['reasoning_content'] + '</think>' -}}{%- endif -%}"
    "{{- m['content'] + '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
TOOLS_TEMPLATE = (
    "{%- if tools -%}{{- '<|im_start|>system\\n' -}}{%- for t in tools -%}"
    "{{- t['function']['name'] + '\\n' -}}{%- endfor -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    + CHATML
)


def hf_folder(root: Path, template: str | None, *, context: int = 4096) -> Path:
    """A model folder as transformers saves it: config.json, chat_template.jinja."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"max_position_embeddings": context}))
    if template is not None:
        (root / "chat_template.jinja").write_text(template, encoding="utf-8")
    return root


# ---------------------------------------------------------------- real models


def test_tiny_model_renders_tools_and_does_not_think(tiny_ir_int8: Path) -> None:
    caps = inspect_model(tiny_ir_int8)
    assert (caps.mode, caps.context_length, caps.tools, caps.reasoning) == (
        "chat",
        2048,
        True,
        False,
    )
    # The template read from the files is the one GenAI itself uses.
    assert caps.chat_template == og.Tokenizer(str(tiny_ir_int8)).chat_template


def test_smollm2_gguf_has_no_tools_though_genai_would_polyfill_them(smollm2_gguf: Path) -> None:
    caps = inspect_model(smollm2_gguf)
    assert (caps.mode, caps.context_length, caps.tools, caps.reasoning) == (
        "chat",
        8192,
        False,
        False,
    )
    assert caps.chat_template == og.Tokenizer(str(smollm2_gguf)).chat_template
    # Passed as `tools`, GenAI writes them into a system message of its own for a template
    # that ignores them: that is not the model's format, so it is not counted as support.
    with tempfile.TemporaryDirectory() as empty:
        rendered = og.Tokenizer(empty).apply_chat_template(
            [{"role": "user", "content": "Hi"}],
            True,
            chat_template=caps.chat_template,
            tools=[PROBE_TOOL],
        )
    assert "lookup_probe" in rendered and "lookup_probe" not in caps.chat_template


# ---------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("template", "tools", "reasoning"),
    [
        (TOOLS_TEMPLATE, True, False),
        (SWITCH, False, True),
        (OPENER, False, True),
        (REPLAY, False, True),
        (CHATML, False, False),
        ("{{ raise_exception('unusable') }}", False, False),
    ],
    ids=["tools", "thinking-switch", "opens-think", "replays-reasoning", "plain", "raises"],
)
def test_template_probes(tmp_path: Path, template: str, tools: bool, reasoning: bool) -> None:
    caps = inspect_model(hf_folder(tmp_path / "m", template))
    assert (caps.mode, caps.tools, caps.reasoning) == ("chat", tools, reasoning)


def test_template_from_tokenizer_config(tmp_path: Path) -> None:
    folder = hf_folder(tmp_path / "named", None)
    named = [{"name": "tool_use", "template": CHATML}, {"name": "default", "template": SWITCH}]
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert inspect_model(folder).reasoning is True
    plain = hf_folder(tmp_path / "plain", None)
    (plain / "tokenizer_config.json").write_text(json.dumps({"chat_template": TOOLS_TEMPLATE}))
    assert inspect_model(plain).tools is True


def test_a_changed_template_is_read_again(tmp_path: Path) -> None:
    folder = hf_folder(tmp_path / "m", CHATML)
    assert inspect_model(folder).reasoning is False
    template = folder / "chat_template.jinja"
    template.write_text(OPENER, encoding="utf-8")
    stat = template.stat()
    os.utime(template, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert inspect_model(folder).reasoning is True


def test_modes_by_task_and_template(tmp_path: Path) -> None:
    no_template = hf_folder(tmp_path / "base", None)
    assert inspect_model(no_template).mode == "completion"
    encoder = hf_folder(tmp_path / "encoder", None, context=512)
    for task, mode in [
        ("feature-extraction", "embedding"),
        ("sentence-similarity", "embedding"),
        ("text-classification", "rerank"),
        ("image-to-text", None),
    ]:
        caps = inspect_model(encoder, task)
        assert (caps.mode, caps.context_length, caps.max_output_tokens(4096)) == (mode, 512, None)
    missing = inspect_model(tmp_path / "not-there")
    assert (missing.mode, missing.context_length, missing.tools) == ("chat", None, False)


def test_unreadable_gguf_is_no_crash(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    caps = inspect_model(broken)
    assert (caps.context_length, caps.chat_template, caps.tools) == (None, None, False)


def test_card_facts_apply_limits_and_registry_overrides(tmp_path: Path) -> None:
    folder = hf_folder(tmp_path / "m", TOOLS_TEMPLATE.replace(CHATML, SWITCH), context=2048)
    entry = ModelEntry(path=str(folder))
    assert card_facts(folder, entry, 4096) == {
        "mode": "chat",
        "context_length": 2048,
        "max_model_len": 2048,
        "max_output_tokens": 2048,
        "capabilities": ["tools", "reasoning", "response_schema"],
        "dimension": None,
    }
    off = ModelEntry(path=str(folder), tool_parser="none", reasoning_parser="none")
    facts = card_facts(folder, off, 512)
    assert (facts["max_output_tokens"], facts["capabilities"]) == (512, ["response_schema"])


# ---------------------------------------------------------------- /v1/models


def test_model_cards_show_the_capabilities(server: LiveServer) -> None:
    cards = {c["id"]: c for c in httpx.get(f"{server.v1}/models", timeout=30).json()["data"]}
    for name in ("tiny-int8", "tiny-fp16"):
        card = cards[name]
        assert (card["mode"], card["context_length"], card["max_output_tokens"]) == (
            "chat",
            2048,
            2048,
        )
        assert card["capabilities"] == ["tools", "response_schema"]


def test_fallback_model_card_shows_the_capabilities(smol_server: LiveServer) -> None:
    (card,) = httpx.get(f"{smol_server.v1}/models", timeout=30).json()["data"]
    assert card["source"] == "fallback"
    assert (card["mode"], card["context_length"], card["max_output_tokens"]) == (
        "chat",
        8192,
        4096,
    )
    assert card["capabilities"] == ["response_schema"]
