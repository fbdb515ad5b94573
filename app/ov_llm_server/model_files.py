"""Facts about a model read from its files without loading it: its context length (``config.json``
beside an IR, or a GGUF's own metadata) and its chat template's text.

Both processes read these: the HTTP side (``capabilities.py``, for ``/v1/models``) and the
engine (its context limit). So nothing here imports GenAI or starts a process; what a
template does is probed by ``capabilities.py`` alone. An encoder's facts (pooling, limits,
labels) come from ``encoder_config.py``, which the converter shares.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(path: Path) -> int | None:
    """The context window in tokens of the model at ``path`` (an IR folder or a ``.gguf``
    file), when its files say."""
    if path.suffix == ".gguf":
        return gguf_facts(path)[1]
    return config_context_length(path)


def config_context_length(folder: Path) -> int | None:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    # A vision-language model's window is its language model's, in ``text_config``.
    for section in (data, data.get("text_config")):
        if not isinstance(section, dict):
            continue
        for key in _CONTEXT_KEYS:
            value = section.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def ir_template(folder: Path) -> str | None:
    """The template GenAI uses: the tokenizer IR's rt_info first, then the HF files."""
    template = rt_info_template(folder / "openvino_tokenizer.xml")
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


def rt_info_template(xml_file: Path) -> str | None:
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


class GGUFError(Exception):
    pass


def gguf_facts(path: Path) -> tuple[str | None, int | None]:
    try:
        meta = gguf_metadata(path)
    except (OSError, ValueError, OverflowError, struct.error, GGUFError) as exc:
        log.warning("cannot read the GGUF metadata of %s: %s", path, exc)
        return None, None
    template = meta.get("tokenizer.chat_template")
    context = meta.get(f"{meta.get('general.architecture')}.context_length")
    return (
        template if isinstance(template, str) else None,
        context if isinstance(context, int) and context > 0 else None,
    )


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The scalar and string metadata of a GGUF file; arrays are skipped unread.

    The ``gguf`` package decodes every token of the vocabulary into numpy objects
    (about 7 s for SmolLM2's 49k tokens); skipping them takes milliseconds.
    """
    found: dict[str, Any] = {}
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise GGUFError("not a GGUF file")
        version, _tensors, count = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise GGUFError(f"GGUF version {version} is not supported")
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
            raise GGUFError(f"unknown GGUF value type {kind}")

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
