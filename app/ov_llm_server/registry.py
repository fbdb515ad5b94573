"""The model registry (``registry.json``): one module for the server and the converter.

Format: ``{"version": 1, "models": {"<name>": {"path", "task", "weight_format"}}}``, plus
optional fields per entry (``device``, ``tool_parser``, ``reasoning_parser``, ``speculative``,
``inference_precision``, ``voices``).
Fields a reader does not know are kept as they are, so the version stays 1 when one is added.
Readers never see a half-written file: writers take an inter-process lock, write a
temporary file in the same folder, fsync it and rename it over the old one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

REGISTRY_VERSION = 1
# The task of text-to-speech models (optimum-intel's name): it picks their engine and device.
SPEECH_TASK = "text-to-audio"
# What every generative text task starts with ("text-generation", "...-with-past").
TEXT_GENERATION = "text-generation"
LOCK_TIMEOUT_SECONDS = 60


class RegistryError(Exception):
    """The registry file cannot be used; the message says why in one line."""


# Speculative decoding: defaults are GenAI's samples' and OVMS's (5 draft tokens a step; n-grams
# of up to 3 tokens looked up in the prompt). The bounds keep a step's validation width sane.
DEFAULT_ASSISTANT_TOKENS = 5
DEFAULT_NGRAM_SIZE = 3
MAX_ASSISTANT_TOKENS = 32


class PromptLookup(BaseModel):
    """Draft tokens copied from the prompt: where an n-gram of the answer's tail occurred in
    the prompt, the tokens that followed it there are proposed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: Literal["prompt_lookup"]
    num_assistant_tokens: int = Field(DEFAULT_ASSISTANT_TOKENS, ge=1, le=MAX_ASSISTANT_TOKENS)
    max_ngram_size: int = Field(DEFAULT_NGRAM_SIZE, ge=1, le=MAX_ASSISTANT_TOKENS)


class DraftModel(BaseModel):
    """Draft tokens from a smaller model of the same tokenizer, another registry entry."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: Literal["draft"]
    draft_model: str = Field(min_length=1)  # a registry name
    draft_device: str | None = Field(None, min_length=1)  # None: the main model's device
    num_assistant_tokens: int = Field(DEFAULT_ASSISTANT_TOKENS, ge=1, le=MAX_ASSISTANT_TOKENS)


Speculative = Annotated[PromptLookup | DraftModel, Field(discriminator="method")]
VoiceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


# The tasks (optimum-intel's names) of speech recognisers: Whisper, served on /v1/audio/*.
SPEECH_RECOGNITION = "automatic-speech-recognition-with-past"
SPEECH_TASKS = ("automatic-speech-recognition", SPEECH_RECOGNITION)
# Every audio task: speech to text and text to speech (placed on OV_AUDIO_DEVICE, no chat template).
AUDIO_TASKS = (SPEECH_TASK, *SPEECH_TASKS)


class ModelEntry(BaseModel):
    # Extra keys written by other tools (or by hand) survive a rewrite.
    model_config = ConfigDict(extra="allow")

    path: str = Field(min_length=1)
    task: str = "text-generation-with-past"
    weight_format: str = "unknown"
    # Where this model runs, over OV_DEVICE and the int4 rule (placement.choose_device).
    device: str | None = Field(default=None, min_length=1)
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    speculative: Speculative | None = None
    # Over OV_INFERENCE_PRECISION (precision.py); None follows it.
    inference_precision: Literal["auto", "f32", "bf16", "f16"] | None = None
    # Text to speech: more voices, each a speaker embedding file (raw float32 .bin or .npy),
    # relative to the model folder or absolute, beside the folder's speaker_embeddings/.
    voices: dict[VoiceName, Annotated[str, Field(min_length=1)]] | None = None


class RegistryData(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: Literal[1] = 1
    models: dict[str, ModelEntry] = Field(default_factory=dict)


def resolve_model_path(registry_path: Path, entry: ModelEntry) -> Path:
    """Relative paths in the registry are relative to the registry's folder."""
    path = Path(entry.path).expanduser()
    return path if path.is_absolute() else (registry_path.parent / path)


def parse_registry(text: str, source: Path) -> RegistryData:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: expected a JSON object at the top level")
    if raw.get("version") != REGISTRY_VERSION:
        raise RegistryError(
            f"{source}: unsupported registry version {raw.get('version')!r} "
            f"(this server reads version {REGISTRY_VERSION})"
        )
    try:
        return RegistryData.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RegistryError(f"{source}: invalid entry at {where}: {first['msg']}") from exc


def read_registry(path: Path, *, missing_ok: bool = True) -> RegistryData:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return RegistryData()
        raise RegistryError(f"{path}: registry file not found") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse_registry(text, path)


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def registry_lock(path: Path) -> FileLock:
    return FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_SECONDS)


def update_registry(path: Path, mutate: Callable[[RegistryData], None]) -> RegistryData:
    """Read-modify-write under the lock; a corrupt file is refused, never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with registry_lock(path):
        data = read_registry(path, missing_ok=True)
        mutate(data)
        atomic_write_json(path, data.model_dump(mode="json", exclude_none=True))
        return data


@dataclass(frozen=True)
class RegistrySnapshot:
    data: RegistryData
    error: str | None  # why the newest file on disk is not the one in use, if it is not


class RegistryWatcher:
    """Serves the registry, re-reading the file whenever it changes on disk.

    A missing or corrupt file keeps the last good registry in use; ``error`` says why.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._snapshot = RegistrySnapshot(RegistryData(), None)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def snapshot(self) -> RegistrySnapshot:
        stamp = self._stat()
        with self._lock:
            if stamp is not None and stamp == self._stamp:
                return self._snapshot
            last_good = self._snapshot.data
            if stamp is None:
                error = f"{self.path}: registry file not found"
                self._snapshot = RegistrySnapshot(last_good, error)
            else:
                try:
                    data = read_registry(self.path, missing_ok=False)
                except RegistryError as exc:
                    if str(exc) != self._snapshot.error:
                        log.error("registry unusable, keeping the last good one: %s", exc)
                    self._snapshot = RegistrySnapshot(last_good, str(exc))
                else:
                    if self._stamp is not None:
                        log.info("registry reloaded: %d models", len(data.models))
                    self._snapshot = RegistrySnapshot(data, None)
            self._stamp = stamp
            return self._snapshot

    def entries(self) -> dict[str, ModelEntry]:
        return self.snapshot().data.models
