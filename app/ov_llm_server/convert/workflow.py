"""The conversion workflow: find the source, convert beside the target, rename, register, move.

Every step that can fail runs before anything visible changes: the IR is written to a hidden
temporary folder next to its final place (same filesystem) and renamed into place only when it
is complete, the registry is updated after that (and the rename undone if the update fails),
and the original moves to ``og_models`` last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from ov_llm_server.convert.export import (
    DEFAULT_TASK,
    ConversionError,
    ExportOptions,
    chat_template_of,
    encoder_record,
    export_gguf,
    export_model,
    missing_files,
    options_record,
    resolve_task,
    served_encoder_record,
)
from ov_llm_server.convert.record import (
    RECORD_NAME,
    build_record,
    fingerprint,
    read_record,
    utc_now,
    write_record,
)
from ov_llm_server.encoder_config import (
    ENCODER_TASKS,
    FEATURE_EXTRACTION,
    IMAGE_TEXT_TO_TEXT,
    TEXT_CLASSIFICATION,
    load_embedding_config,
    load_rerank_config,
    tokenizer_gaps,
)
from ov_llm_server.registry import (
    SPEECH_TASK,
    SPEECH_TASKS,
    ModelEntry,
    RegistryData,
    RegistryError,
    read_registry,
    resolve_model_path,
    update_registry,
)
from ov_llm_server.settings import Settings
from ov_llm_server.textutil import one_line

log = logging.getLogger(__name__)

CONVERTED_DIR = "converted_models"
ORIGINALS_DIR = "og_models"
TMP_MARKER = ".tmp-"
HEARTBEAT_SECONDS = 30.0
SourceFormat = Literal["hf", "gguf"]


@dataclass(frozen=True)
class Layout:
    """Where sources, converted models, originals and the registry live."""

    models_dir: Path
    registry_path: Path

    @property
    def converted_dir(self) -> Path:
        return self.models_dir / CONVERTED_DIR

    @property
    def originals_dir(self) -> Path:
        return self.models_dir / ORIGINALS_DIR

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        models_dir: Path | None = None,
        registry_path: Path | None = None,
    ) -> Layout:
        """``--models-dir`` over OV_MODELS_DIR; ``--registry`` over OV_REGISTRY_PATH.

        Without an explicit registry the registry lives in the models root's
        ``converted_models``, so another ``--models-dir`` brings its own registry.
        """
        root = (models_dir or settings.models_dir).expanduser().absolute()
        if registry_path is not None:
            registry = registry_path.expanduser()
        elif "registry_path" in settings.model_fields_set:
            registry = settings.registry_path
        else:
            registry = root / CONVERTED_DIR / "registry.json"
        return cls(models_dir=root, registry_path=registry.absolute())


@dataclass(frozen=True)
class Source:
    name: str
    path: Path  # an HF folder or a .gguf file
    format: SourceFormat
    in_originals: bool  # already moved to og_models by an earlier conversion


def registry_name(name: str, weight_format: str) -> str:
    return f"{name}-{weight_format}"


def output_dir(layout: Layout, name: str, task: str, weight_format: str) -> Path:
    return layout.converted_dir / name / f"task-{task}__wf-{weight_format}"


def _gguf_in(folder: Path) -> Path | None:
    files = sorted(folder.glob("*.gguf"))
    return files[0] if len(files) == 1 else None


def _source_at(path: Path, name: str, in_originals: bool) -> Source | None:
    if path.is_dir():
        if (path / "config.json").is_file():
            return Source(name, path, "hf", in_originals)
        gguf = _gguf_in(path)
        if gguf is not None:
            return Source(name, gguf, "gguf", in_originals)
        return None
    gguf_file = path.with_name(path.name + ".gguf")
    if gguf_file.is_file():
        return Source(name, gguf_file, "gguf", in_originals)
    return None


def _validate_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or name.startswith("."):
        raise ConversionError(f"invalid model name {name!r}: use the folder name under the root")
    if name in {CONVERTED_DIR, ORIGINALS_DIR}:
        raise ConversionError(f"{name!r} is the converter's own folder, not a model")


def find_source(layout: Layout, name: str) -> Source:
    """``<root>/NAME`` (a fresh drop) or ``<root>/og_models/NAME`` (converted before)."""
    _validate_name(name)
    fresh = _source_at(layout.models_dir / name, name, in_originals=False)
    moved = _source_at(layout.originals_dir / name, name, in_originals=True)
    if fresh is not None and moved is not None:
        raise ConversionError(
            f"{name} is both in {layout.models_dir} and in {layout.originals_dir}; "
            "remove the stale copy"
        )
    source = fresh or moved
    if source is None:
        if (layout.models_dir / name).exists():
            raise ConversionError(
                f"{layout.models_dir / name} is neither a Hugging Face model folder "
                "(no config.json) nor a folder with one .gguf file"
            )
        raise ConversionError(f"no model {name!r} in {layout.models_dir} or {layout.originals_dir}")
    return source


def discover_sources(layout: Layout) -> list[str]:
    """Names of the unconverted models in the root: what ``--all`` converts."""
    names: list[str] = []
    if not layout.models_dir.is_dir():
        return names
    for path in sorted(layout.models_dir.iterdir()):
        if path.name.startswith(".") or path.name in {CONVERTED_DIR, ORIGINALS_DIR}:
            continue
        name = path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.name
        if path.is_file() and not path.name.endswith(".gguf"):
            continue
        if _source_at(layout.models_dir / name, name, in_originals=False) and name not in names:
            names.append(name)
    return names


@dataclass(frozen=True)
class Plan:
    source: Source
    options: ExportOptions
    target: Path
    registry_name: str
    target_exists: bool
    move_original_to: Path | None
    encoder: dict[str, Any] | None = None  # conversion.json's "encoder" section

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def task(self) -> str:
        return self.options.task or DEFAULT_TASK

    @property
    def weight_format(self) -> str:
        # A GGUF keeps its own quantisation; the registry says where the model came from.
        return "gguf" if self.source.format == "gguf" else self.options.weight_format

    def describe(self) -> str:
        action = "replace" if self.target_exists else "create"
        lines = [
            f"{self.name}: {self.source.format} source {self.source.path}",
            f"  task {self.task}",
            f"  {action} {self.target}",
            f"  register {self.registry_name}",
        ]
        if self.move_original_to is not None:
            lines.append(f"  move the original to {self.move_original_to}")
        return "\n".join(lines)


def plan_conversion(
    layout: Layout, name: str, options: ExportOptions, *, force: bool = False
) -> Plan:
    source = find_source(layout, name)
    if source.format == "gguf":
        options = replace(options, task=options.task or DEFAULT_TASK)
        encoder = None
    else:
        options = resolve_task(source.path, options)
        encoder = encoder_record(source.path, str(options.task))
    wf = "gguf" if source.format == "gguf" else options.weight_format
    target = output_dir(layout, name, str(options.task), wf)
    target_exists = target.exists()
    if target_exists and not force:
        raise ConversionError(f"{target} exists already (use --force to convert again)")
    move_to = None
    if not source.in_originals:
        move_to = layout.originals_dir / source.path.relative_to(layout.models_dir)
        if source.format == "gguf" and source.path.parent != layout.models_dir:
            move_to = layout.originals_dir / name
    return Plan(
        source=source,
        options=options,
        target=target,
        registry_name=registry_name(name, wf),
        target_exists=target_exists,
        move_original_to=move_to,
        encoder=encoder,
    )


@dataclass
class Result:
    plan: Plan
    seconds: float
    record: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def progress(step: str) -> Iterator[None]:
    """Log the start and end of a long step, and a line every 30 s in between."""
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            log.info("%s: still working, %.0f s so far", step, time.monotonic() - started)

    log.info("%s ...", step)
    thread = threading.Thread(target=heartbeat, name="convert-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    log.info("%s: done in %.1f s", step, time.monotonic() - started)


def _conversion_lock(layout: Layout, name: str) -> FileLock:
    """One conversion of a model at a time: the original moves at the end of each."""
    lock_dir = layout.converted_dir / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock_dir / f"{name}.lock"))


def _entry_path(layout: Layout, target: Path) -> str:
    # Relative to the registry when below it, so the models tree can move as a whole.
    base = layout.registry_path.parent
    return target.relative_to(base).as_posix() if target.is_relative_to(base) else str(target)


def _check_registry(layout: Layout) -> None:
    try:
        read_registry(layout.registry_path, missing_ok=True)
    except RegistryError as exc:
        raise ConversionError(f"registry unusable, nothing converted: {exc}") from exc


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        raise OSError(f"{dst} exists")
    try:
        src.rename(dst)
    except OSError:
        shutil.move(str(src), str(dst))


def convert(layout: Layout, name: str, options: ExportOptions, *, force: bool = False) -> Result:
    """Convert one model, register it and move its original; all or nothing until the move."""
    lock = _conversion_lock(layout, name)
    try:
        lock.acquire(timeout=0)
    except TimeoutError:
        log.info("%s: waiting for another conversion of the same model", name)
        lock.acquire()
    try:
        # Planned under the lock: an earlier conversion may just have moved the original.
        plan = plan_conversion(layout, name, options, force=force)
        _check_registry(layout)
        return _convert_locked(layout, plan)
    finally:
        lock.release()


def _scratch_dir(parent: Path, prefix: str) -> Path:
    """A new folder with the umask's permissions (mkdtemp's 0700 would hide the model from
    the service user, who reads the models tree through its group)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ConversionError(f"cannot create a temporary folder in {parent}")


def _convert_locked(layout: Layout, plan: Plan) -> Result:
    started_at = utc_now()
    started = time.monotonic()
    parent = plan.target.parent
    created_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch_dir(parent, f".{plan.target.name}{TMP_MARKER}")
    backup: Path | None = None
    placed = False
    try:
        source_fingerprint = fingerprint(plan.source.path)
        step = f"{plan.name}: converting to {plan.weight_format}"
        with progress(step):
            if plan.source.format == "gguf":
                quantization = export_gguf(plan.source.path, tmp)
            else:
                quantization = export_model(plan.source.path, tmp, plan.options)
        record = build_record(
            name=plan.name,
            registry_name=plan.registry_name,
            source_path=plan.source.path,
            source_format=plan.source.format,
            original_moved_to=plan.move_original_to,
            source_fingerprint=source_fingerprint,
            task=plan.task,
            weight_format=plan.weight_format,
            quantization=quantization,
            encoder=plan.encoder and served_encoder_record(tmp, plan.task, plan.encoder),
            options=(
                {"task": plan.task}
                if plan.source.format == "gguf"
                else options_record(plan.options)
            ),
            started=started_at,
            finished=utc_now(),
        )
        write_record(tmp, record)
        if plan.target.exists():
            backup = parent / f".{plan.target.name}.old-{secrets.token_hex(4)}"
            plan.target.rename(backup)
        tmp.rename(plan.target)
        placed = True

        original = plan.move_original_to or plan.source.path
        entry = ModelEntry(
            path=_entry_path(layout, plan.target),
            task=plan.task,
            weight_format=plan.weight_format,
            source=str(original),
            converted_at=record["finished_at"],
        )

        def register(data: RegistryData) -> None:
            data.models[plan.registry_name] = entry

        try:
            update_registry(layout.registry_path, register)
        except (RegistryError, OSError, TimeoutError) as exc:
            raise ConversionError(f"registry not updated, conversion undone: {exc}") from exc
        log.info("%s: registered as %s in %s", plan.name, plan.registry_name, layout.registry_path)
    except BaseException:
        if placed:
            shutil.rmtree(plan.target, ignore_errors=True)
        if backup is not None:
            backup.rename(plan.target)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent:
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty, i.e. the conversion failed
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)

    result = Result(plan=plan, seconds=time.monotonic() - started, record=record)
    if plan.move_original_to is not None:
        source_root = (
            plan.source.path
            if plan.source.format == "hf" or plan.source.path.parent == layout.models_dir
            else plan.source.path.parent
        )
        try:
            _move(source_root, plan.move_original_to)
            log.info("%s: original moved to %s", plan.name, plan.move_original_to)
        except OSError as exc:
            result.warnings.append(f"converted, but the original stays in place: {exc}")
    return result


# ---------------------------------------------------------------- registry maintenance


def _deletable(layout: Layout, name: str, entry: ModelEntry) -> Path:
    path = resolve_model_path(layout.registry_path, entry).resolve()
    converted = layout.converted_dir.resolve()
    if not path.is_relative_to(converted) or path == converted:
        raise ConversionError(
            f"{name}: will not delete {path}, it is not below {converted} "
            "(remove the entry without --delete-files)"
        )
    return path


def remove_entry(layout: Layout, name: str, *, delete_files: bool = False) -> ModelEntry:
    """Drop ``name`` from the registry; with ``delete_files`` also its folder.

    Files are deleted only below ``converted_models``; an entry pointing elsewhere is refused
    as a whole, so the registry and the files never disagree.
    """
    removed: list[ModelEntry] = []

    def drop(data: RegistryData) -> None:
        entry = data.models.get(name)
        if entry is None:
            raise ConversionError(f"{name!r} is not in the registry {layout.registry_path}")
        if delete_files:
            _deletable(layout, name, entry)
        removed.append(data.models.pop(name))

    try:
        update_registry(layout.registry_path, drop)
    except RegistryError as exc:
        raise ConversionError(str(exc)) from exc
    entry = removed[0]
    if delete_files:
        path = _deletable(layout, name, entry)
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the model's folder, once its last format is gone
        log.info("deleted %s", path)
    return entry


@dataclass
class Check:
    name: str
    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_entry(layout: Layout, name: str, entry: ModelEntry, *, load: bool, device: str) -> Check:
    path = resolve_model_path(layout.registry_path, entry)
    check = Check(name=name, path=path)
    if not path.exists():
        check.problems.append(f"{path} does not exist")
        return check
    if path.is_file():
        if path.suffix != ".gguf":
            check.problems.append(f"{path} is a file but not a .gguf")
    else:
        missing = missing_files(path, entry.task)
        if missing:
            check.problems.append(f"missing or empty: {', '.join(missing)}")
            return check
        if read_record(path) is None:
            check.notes.append(f"no {RECORD_NAME}")
        try:
            if entry.task in ENCODER_TASKS:
                gaps = tokenizer_gaps(path)
                if gaps:
                    check.problems.append(f"the tokenizer does not produce {', '.join(gaps)}")
                    return check
            elif (
                entry.task != SPEECH_TASK
                and entry.task not in SPEECH_TASKS
                and not chat_template_of(path)
            ):
                check.notes.append("no chat template in openvino_tokenizer.xml")
        except Exception as exc:
            check.problems.append(f"openvino_tokenizer.xml unreadable: {one_line(exc)}")
            return check
    if load:
        try:
            _load(path, entry.task, device)
        except Exception as exc:
            check.problems.append(f"does not load on {device}: {one_line(exc)}")
    return check


def _load(path: Path, task: str, device: str) -> None:
    """Load the model into the openvino_genai pipeline that serves its task, after reading
    the configuration the engine reads (the engine's classes stay in the engine process)."""
    import openvino_genai as og

    if task == FEATURE_EXTRACTION:
        load_embedding_config(path)
        og.TextEmbeddingPipeline(str(path), device)
    elif task == TEXT_CLASSIFICATION:
        load_rerank_config(path)
        og.TextRerankPipeline(str(path), device)
    elif task == IMAGE_TEXT_TO_TEXT:
        og.VLMPipeline(str(path), device)
    elif task == SPEECH_TASK:
        og.Text2SpeechPipeline(str(path), device)
    elif task in SPEECH_TASKS:
        og.WhisperPipeline(str(path), device)
    else:
        og.LLMPipeline(str(path), device)


def verify_all(layout: Layout, *, load: bool, device: str) -> list[Check]:
    try:
        data = read_registry(layout.registry_path, missing_ok=False)
    except RegistryError as exc:
        raise ConversionError(str(exc)) from exc
    checks = [
        verify_entry(layout, name, entry, load=load, device=device)
        for name, entry in sorted(data.models.items())
    ]
    return checks


def leftover_temporaries(layout: Layout) -> list[Path]:
    """Scratch folders a killed converter left behind (a clean failure leaves none)."""
    if not layout.converted_dir.is_dir():
        return []
    return sorted(
        p
        for p in layout.converted_dir.glob("*/.*")
        if p.is_dir() and (TMP_MARKER in p.name or ".old-" in p.name)
    )


def unregistered_outputs(layout: Layout, entries: dict[str, ModelEntry]) -> list[Path]:
    """Converted folders no entry points to, e.g. after ``remove`` without ``--delete-files``."""
    if not layout.converted_dir.is_dir():
        return []
    registered = {resolve_model_path(layout.registry_path, e).resolve() for e in entries.values()}
    return sorted(
        p
        for p in layout.converted_dir.glob("*/task-*__wf-*")
        if p.is_dir() and p.resolve() not in registered
    )


def registry_entries(layout: Layout) -> dict[str, ModelEntry]:
    try:
        return read_registry(layout.registry_path, missing_ok=True).models
    except RegistryError as exc:
        raise ConversionError(str(exc)) from exc


def entry_exists(layout: Layout, entry: ModelEntry) -> bool:
    return os.path.exists(resolve_model_path(layout.registry_path, entry))
