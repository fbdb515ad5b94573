"""``conversion.json``: what was converted, how, with which tools, when and where."""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RECORD_NAME = "conversion.json"
RECORD_VERSION = 1

# Files whose content decides what the converted model is; weights are fingerprinted by size
# only, since hashing gigabytes would double the conversion time of a large model.
HASHED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)
# A GGUF file carries its config and tokenizer in the header, before the tensors.
GGUF_HEAD_BYTES = 32 * 1024 * 1024

VERSIONED_PACKAGES = (
    "openvino",
    "openvino-genai",
    "openvino-tokenizers",
    "optimum-intel",
    "optimum",
    "nncf",
    "transformers",
    "torch",
    "ov-llm-server",
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _sha256(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    remaining = limit
    with path.open("rb") as handle:
        while True:
            size = 1 << 20 if remaining is None else min(1 << 20, remaining)
            chunk = handle.read(size)
            if not chunk:
                break
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return digest.hexdigest()


def fingerprint(source: Path) -> dict[str, Any]:
    """Files and sizes of a source model, with hashes of its config and tokenizer files."""
    if source.is_file():
        size = source.stat().st_size
        return {
            "files": [{"path": source.name, "size": size}],
            "total_size": size,
            "sha256": {f"{source.name}[:{GGUF_HEAD_BYTES}]": _sha256(source, GGUF_HEAD_BYTES)},
        }
    files = sorted(p for p in source.rglob("*") if p.is_file() and ".cache" not in p.parts)
    sizes = {p.relative_to(source).as_posix(): p.stat().st_size for p in files}
    hashes = {name: _sha256(source / name) for name in HASHED_FILES if (source / name).is_file()}
    return {
        "files": [{"path": path, "size": size} for path, size in sizes.items()],
        "total_size": sum(sizes.values()),
        "sha256": hashes,
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_record(
    *,
    name: str,
    registry_name: str,
    source_path: Path,
    source_format: str,
    original_moved_to: Path | None,
    source_fingerprint: dict[str, Any],
    task: str,
    weight_format: str,
    quantization: dict[str, Any],
    options: dict[str, Any],
    started: datetime,
    finished: datetime,
    encoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "name": name,
        "registry_name": registry_name,
        "source": {
            "name": name,
            "path": str(source_path),
            "format": source_format,
            "moved_to": str(original_moved_to) if original_moved_to else None,
            "fingerprint": source_fingerprint,
        },
        "task": task,
        "weight_format": weight_format,
        "quantization": quantization,
        "options": options,
        "versions": package_versions(),
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "host": socket.gethostname(),
    }
    if encoder is not None:
        # Read back by the engine (encoder_config.py): pooling, prompts, limits, labels.
        record["encoder"] = encoder
    return record


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    path = folder / RECORD_NAME
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_record(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
