"""What a model can do, read from its files without loading it.

Facts: the mode it serves and the engine that runs it (from the registry's task), its context
length (``config.json`` beside an IR, or a GGUF's own metadata; an encoder's maximum input
from ``conversion.json``), an embedder's vector size, and what its chat template does: whether it
renders the request's tools and whether it thinks (``<think>``). ``GET /v1/models`` shows
them and ``ov-llm-server litellm-config`` turns them into LiteLLM's ``model_info``.

The template is rendered by OpenVINO GenAI's own template engine, the one that renders
prompts at serving time, in a short-lived child process (``python -m
ov_llm_server.capabilities``): the HTTP process never imports GenAI, whose imports and
loads hold the GIL. GenAI polyfills tools into the prompt of a template that ignores them
(a generic "You can call any of the following tools" system message), so the probe tools
go in as a plain template variable: only a template that renders them itself counts as
supporting tools.

Reading the files is cheap (a few ms: no weights, no tokenizer model; a GGUF's token
arrays are skipped, not decoded); the results are cached per file version, and the
probe's per template text.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

from .encoder_config import EncoderConfigError, load_embedding_config, load_rerank_config
from .engine.messages import EngineKind
from .protocol import Capability, ModelMode
from .registry import ModelEntry

log = logging.getLogger(__name__)

# Registry tasks (optimum-intel's names) and the API surface each is served on.
_TASK_MODES: dict[str, ModelMode] = {
    "text-generation": "chat",
    "text-generation-with-past": "chat",
    "feature-extraction": "embedding",
    "sentence-similarity": "embedding",
    "text-classification": "rerank",
}
DEFAULT_TASK = "text-generation-with-past"
_ENCODER_MODES: dict[ModelMode | None, EngineKind] = {"embedding": "embedding", "rerank": "rerank"}

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
_PROBE_TOOL = "ov_capability_probe_tool"
_PROBE_REASONING = "ov capability probe reasoning"
_THINK_OPEN = "<think>"
_PROBE_TIMEOUT_SECONDS = 60


def engine_kind(task: str | None) -> EngineKind:
    """The engine that serves a registry task: an encoder's, or else a generative model's."""
    return _ENCODER_MODES.get(_TASK_MODES.get(task or DEFAULT_TASK), "llm")


@dataclass(frozen=True)
class Capabilities:
    mode: ModelMode | None  # None: a task this server does not know
    context_length: int | None
    chat_template: str | None
    tools: bool  # the chat template renders the request's tools
    reasoning: bool  # the chat template thinks: opens, switches or replays <think> blocks
    dimension: int | None = None  # an embedder's vector size

    def max_output_tokens(self, limit: int) -> int | None:
        """Most tokens one answer can have: the server's limit, within the context."""
        if self.mode not in ("chat", "completion"):
            return None
        return limit if self.context_length is None else min(limit, self.context_length)


class CardFacts(TypedDict):
    """The fields of a ``/v1/models`` card that say what the model does."""

    mode: ModelMode | None
    context_length: int | None
    max_model_len: int | None  # vLLM's name for it: the tokens one request may take
    max_output_tokens: int | None
    capabilities: list[Capability]
    dimension: int | None


def card_facts(path: Path, entry: ModelEntry | None, max_tokens_limit: int) -> CardFacts:
    """What the model at ``path`` does as this server serves it.

    A registry entry's ``tool_parser`` / ``reasoning_parser`` of ``"none"`` switch the
    server's parsing off, so the capability is not offered either.
    """
    caps = inspect_model(path, entry.task if entry else None)
    offered: list[Capability] = []
    if caps.tools and (entry is None or entry.tool_parser != "none"):
        offered.append("tools")
    if caps.reasoning and (entry is None or entry.reasoning_parser != "none"):
        offered.append("reasoning")
    if caps.mode == "chat":
        offered.append("response_schema")
    return CardFacts(
        mode=caps.mode,
        context_length=caps.context_length,
        max_model_len=caps.context_length,
        max_output_tokens=caps.max_output_tokens(max_tokens_limit),
        capabilities=offered,
        dimension=caps.dimension,
    )


def inspect_model(path: Path, task: str | None = None) -> Capabilities:
    """The capabilities of the model at ``path`` (an IR folder or a ``.gguf`` file)."""
    return _inspect(path, task or DEFAULT_TASK, _version(path))


def context_length(path: Path) -> int | None:
    """The model's context window in tokens, when its files say."""
    return inspect_model(path).context_length


def _version(path: Path) -> tuple[tuple[str, int], ...]:
    """Modification times of every file the facts come from: a changed file is re-read."""
    files = [path] if path.suffix == ".gguf" else [path / name for name in _IR_FILES]
    stamps = []
    for file in files:
        try:
            stamps.append((file.name, file.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(stamps)


_IR_FILES = (
    "openvino_tokenizer.xml",
    "chat_template.jinja",
    "tokenizer_config.json",
    "config.json",
    "conversion.json",
)


@lru_cache(maxsize=256)
def _inspect(path: Path, task: str, version: tuple[tuple[str, int], ...]) -> Capabilities:
    mode = _TASK_MODES.get(task)
    if not version:  # no file to read: the registry's word is all there is
        return Capabilities(mode, None, None, False, False)
    if mode == "embedding" or mode == "rerank":
        return _encoder_capabilities(path, mode)
    if path.suffix == ".gguf":
        template, context = _gguf_facts(path)
    else:
        template, context = _ir_template(path), _config_context_length(path)
    if mode == "chat" and not template:
        # Without a chat template only raw text continuation makes sense.
        mode = "completion"
    tools = reasoning = False
    if mode == "chat" and template:
        tools, reasoning = _probe_in_child(template)
    return Capabilities(mode, context, template or None, tools, reasoning)


def _encoder_capabilities(path: Path, mode: ModelMode) -> Capabilities:
    """An encoder's facts, from what the converter recorded (its maximum input, not the
    position table's size, is what a request may take)."""
    try:
        if mode == "embedding":
            embedding = load_embedding_config(path)
            return Capabilities(mode, embedding.max_length, None, False, False, embedding.dimension)
        return Capabilities(mode, load_rerank_config(path).max_length, None, False, False)
    except EncoderConfigError as exc:
        log.warning("cannot read the encoder configuration of %s: %s", path, exc)
        return Capabilities(mode, None, None, False, False)


# ---------------------------------------------------------------- files


def _config_context_length(folder: Path) -> int | None:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    for key in _CONTEXT_KEYS:
        value = data.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _ir_template(folder: Path) -> str | None:
    """The template GenAI uses: the tokenizer IR's rt_info first, then the HF files."""
    template = _rt_info_template(folder / "openvino_tokenizer.xml")
    if template:
        return template
    try:
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    except OSError:
        pass
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(value, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default")
    return value if isinstance(value, str) else None


def _rt_info_template(xml_file: Path) -> str | None:
    try:
        for _, element in ET.iterparse(xml_file):
            if element.tag == "chat_template":
                value = element.get("value")
                return value if value else None
            if element.tag == "layers":
                element.clear()  # the graph is most of the file; rt_info follows it
    except (OSError, ET.ParseError):
        return None
    return None


# GGUF value types (ggml's gguf.h) and their struct formats; 8 is a string, 9 an array.
_GGUF_SCALARS = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"
}  # fmt: skip
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GGUFError(Exception):
    pass


def _gguf_facts(path: Path) -> tuple[str | None, int | None]:
    try:
        meta = _gguf_metadata(path)
    except (OSError, ValueError, OverflowError, struct.error, _GGUFError) as exc:
        log.warning("cannot read the GGUF metadata of %s: %s", path, exc)
        return None, None
    template = meta.get("tokenizer.chat_template")
    context = meta.get(f"{meta.get('general.architecture')}.context_length")
    return (
        template if isinstance(template, str) else None,
        context if isinstance(context, int) and context > 0 else None,
    )


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """The scalar and string metadata of a GGUF file; arrays are skipped unread.

    The ``gguf`` package decodes every token of the vocabulary into numpy objects
    (about 7 s for SmolLM2's 49k tokens); skipping them takes milliseconds.
    """
    found: dict[str, Any] = {}
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise _GGUFError("not a GGUF file")
        version, _tensors, count = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise _GGUFError(f"GGUF version {version} is not supported")
        pos = 24

        def string(at: int) -> tuple[str, int]:
            size: int = struct.unpack_from("<Q", buf, at)[0]
            end = at + 8 + size
            return buf[at + 8 : end].decode("utf-8", errors="replace"), end

        def skip(kind: int, at: int) -> int:
            if kind == _GGUF_STRING:
                size: int = struct.unpack_from("<Q", buf, at)[0]
                return at + 8 + size
            if kind == _GGUF_ARRAY:
                item: int
                length: int
                item, length = struct.unpack_from("<IQ", buf, at)
                at += 12
                if item in _GGUF_SCALARS:
                    return at + length * struct.calcsize("<" + _GGUF_SCALARS[item])
                for _ in range(length):
                    at = skip(item, at)
                return at
            if kind in _GGUF_SCALARS:
                return at + struct.calcsize("<" + _GGUF_SCALARS[kind])
            raise _GGUFError(f"unknown GGUF value type {kind}")

        for _ in range(count):
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if kind == _GGUF_STRING:
                found[key], pos = string(pos)
            elif kind in _GGUF_SCALARS:
                (found[key],) = struct.unpack_from("<" + _GGUF_SCALARS[kind], buf, pos)
                pos = skip(kind, pos)
            else:
                pos = skip(kind, pos)
    return found


# ---------------------------------------------------------------- the chat template


@lru_cache(maxsize=64)
def _probe_in_child(template: str) -> tuple[bool, bool]:
    """(renders tools, thinks) of ``template``, probed in a child process."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ov_llm_server.capabilities"],
            input=json.dumps({"template": template}),
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_SECONDS,
            check=True,
        )
        result = json.loads(done.stdout)
        return bool(result["tools"]), bool(result["reasoning"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        log.warning("cannot probe a chat template: %s", exc)
        return False, False


def _probe_template(template: str) -> tuple[bool, bool]:
    user = {"role": "user", "content": "Hello"}
    tool = {
        "type": "function",
        "function": {
            "name": _PROBE_TOOL,
            "description": "Probe",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    replay = [user, {"role": "assistant", "content": "Hi", "reasoning_content": _PROBE_REASONING}]

    def render(messages: list[dict[str, Any]], prompt: bool, **context: Any) -> str:
        try:
            return _render(template, messages, prompt, context)
        except Exception as exc:  # GenAI raises RuntimeError with the Jinja message
            log.debug("the chat template cannot render a probe: %s", exc)
            return ""

    tools = _PROBE_TOOL in render([user], True, tools=[tool])
    plain = render([user], True)
    opens = _THINK_OPEN in plain[plain.rfind("Hello") :] if "Hello" in plain else False
    switch = render([user], True, enable_thinking=True) != render(
        [user], True, enable_thinking=False
    )
    replays = _PROBE_REASONING in render(replay, False)
    return tools, opens or switch or replays


def _render(
    template: str, messages: list[dict[str, Any]], prompt: bool, context: dict[str, Any]
) -> str:
    """Renders with GenAI's template engine; ``context`` is passed as plain variables."""
    return str(
        _template_engine().apply_chat_template(
            messages, prompt, chat_template=template, extra_context=context
        )
    )


@lru_cache(maxsize=1)
def _template_engine() -> Any:
    import openvino_genai as og

    # A tokenizer without a vocabulary: only its template engine is needed.
    with tempfile.TemporaryDirectory(prefix="ov-template-") as empty:
        return og.Tokenizer(empty)


def main() -> None:
    """The child process: a template as JSON on stdin, its capabilities as JSON on stdout."""
    template = json.loads(sys.stdin.read())["template"]
    tools, reasoning = _probe_template(template)
    sys.stdout.write(json.dumps({"tools": tools, "reasoning": reasoning}))


if __name__ == "__main__":
    main()
