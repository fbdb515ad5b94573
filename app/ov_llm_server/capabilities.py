"""What a model can do, read from its files without loading it.

Facts: the mode it serves and the engine that runs it (from the registry's task), its context
length (read by ``model_files.py``, which the engine shares; an encoder's maximum input from
``conversion.json``), an embedder's vector size, and what its chat template does: whether it
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
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

from .encoder_config import EncoderConfigError, load_embedding_config, load_rerank_config
from .engine.messages import EngineKind
from .model_files import config_context_length, gguf_facts, ir_template
from .protocol import Capability, ModelMode
from .registry import SPEECH_TASK, SPEECH_TASKS, ModelEntry

log = logging.getLogger(__name__)

# Registry tasks (optimum-intel's names) and the API surface each is served on.
_TASK_MODES: dict[str, ModelMode] = {
    "text-generation": "chat",
    "text-generation-with-past": "chat",
    "feature-extraction": "embedding",
    "sentence-similarity": "embedding",
    "text-classification": "rerank",
    "image-text-to-text": "chat",
    SPEECH_TASK: "audio_speech",
    **dict.fromkeys(SPEECH_TASKS, "audio_transcription"),
}
DEFAULT_TASK = "text-generation-with-past"
_ENCODER_MODES: dict[ModelMode | None, EngineKind] = {
    "embedding": "embedding",
    "rerank": "rerank",
    "audio_speech": "speech",
    "audio_transcription": "whisper",
}
# Tasks whose engine is not the one their mode picks: a chat model with a vision tower.
_TASK_ENGINES: dict[str, EngineKind] = {"image-text-to-text": "vlm"}

_PROBE_TOOL = "ov_capability_probe_tool"
_PROBE_REASONING = "ov capability probe reasoning"
_THINK_OPEN = "<think>"
_PROBE_TIMEOUT_SECONDS = 60


def engine_kind(task: str | None) -> EngineKind:
    """The engine that serves a registry task: an encoder's, or else a generative model's."""
    task = task or DEFAULT_TASK
    if task in _TASK_ENGINES:
        return _TASK_ENGINES[task]
    return _ENCODER_MODES.get(_TASK_MODES.get(task), "llm")


def serves(engine: EngineKind, wanted: EngineKind) -> bool:
    """An engine of kind ``engine`` serves an endpoint for ``wanted`` models: a vision
    model is a chat model that also reads images."""
    return engine == wanted or (engine, wanted) == ("vlm", "llm")


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
    if engine_kind(entry.task if entry else None) == "vlm":
        offered.append("vision")
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
    if mode in ("audio_speech", "audio_transcription"):  # no context or template to read
        return Capabilities(mode, None, None, False, False)
    if path.suffix == ".gguf":
        template, context = gguf_facts(path)
    else:
        template, context = ir_template(path), config_context_length(path)
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
