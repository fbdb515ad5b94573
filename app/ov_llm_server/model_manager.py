"""Model resolution and lifecycle: name → registry entry → path → loaded :class:`Engine`.

Models load on first use (in a worker thread, so the event loop keeps answering), stay
loaded up to ``max_loaded_models`` with least-recently-used unloading, and optionally
unload after an idle time. A model that fails to load is reported, not retried on
every request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from . import errors
from .engine import Engine, EngineConfig
from .metrics import Metrics
from .registry import ModelEntry, RegistryWatcher, resolve_model_path
from .settings import Settings

log = logging.getLogger(__name__)

# A model whose load failed is tried again after this many seconds, not on every request.
LOAD_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    entry: ModelEntry | None  # None for the fallback model

    @property
    def key(self) -> str:
        return str(self.path)


@dataclass
class LoadFailure:
    reason: str
    at: float


class ModelManager:
    def __init__(
        self, settings: Settings, registry: RegistryWatcher, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._last_used: dict[str, float] = {}
        self._loading: dict[str, asyncio.Task[Engine]] = {}
        self._failures: dict[str, LoadFailure] = {}
        self._idle_task: asyncio.Task[None] | None = None
        # Names are the clients' to choose: a set of them would grow without bound.
        self._fallback_logged = False

    # ------------------------------------------------------------ resolution

    def resolve(self, name: str) -> ResolvedModel:
        entry = self.registry.entries().get(name)
        if entry is not None:
            return ResolvedModel(name, resolve_model_path(self.registry.path, entry), entry)
        if self.settings.model_path is not None:
            log.log(
                logging.DEBUG if self._fallback_logged else logging.INFO,
                "model %r is not in the registry: the fallback model %s serves it",
                name,
                self.settings.model_path,
            )
            self._fallback_logged = True
            return ResolvedModel(name, self.settings.model_path, None)
        raise errors.model_not_found(name)

    def metric_label(self, name: str) -> str:
        """The metrics label of a requested name: bounded by the registry, unlike the names."""
        if name in self.registry.entries():
            return name
        return self.settings.fallback_model_name() or "unknown"

    # ------------------------------------------------------------ state

    def loaded(self) -> list[Engine]:
        return list(self._engines.values())

    def engine_at(self, path: Path) -> Engine | None:
        """The loaded engine of the model at ``path``, if any."""
        return self._engines.get(str(path))

    def failures(self) -> dict[str, str]:
        return {key: failure.reason for key, failure in self._failures.items()}

    # ------------------------------------------------------------ loading

    async def get(self, name: str) -> tuple[ResolvedModel, Engine]:
        resolved = self.resolve(name)
        key = resolved.key
        engine = self._engines.get(key)
        if engine is None:
            failure = self._failures.get(key)
            if failure is not None and time.monotonic() - failure.at < LOAD_RETRY_SECONDS:
                raise errors.unavailable(f"Model '{name}' failed to load: {failure.reason}")
            task = self._loading.get(key)
            if task is None:
                task = asyncio.create_task(self._load(resolved))
                self._loading[key] = task
            engine = await asyncio.shield(task)
        self._engines.move_to_end(key)
        self._last_used[key] = time.monotonic()
        return resolved, engine

    async def _load(self, resolved: ResolvedModel) -> Engine:
        key = resolved.key
        try:
            if not resolved.path.exists():
                raise FileNotFoundError(f"model path {resolved.path} does not exist")
            engine = await asyncio.to_thread(self._open, resolved)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if resolved.path.suffix == ".gguf" and "gguf_open" in str(exc):
                # openvino_genai 2026.4 opens GGUF files read-write.
                reason += " (the service user needs write access to the .gguf file)"
            self._failures[key] = LoadFailure(reason, time.monotonic())
            log.error("model %s failed to load from %s: %s", resolved.name, resolved.path, reason)
            raise errors.unavailable(f"Model '{resolved.name}' failed to load: {reason}") from exc
        finally:
            self._loading.pop(key, None)
        self._failures.pop(key, None)
        self._engines[key] = engine
        self._last_used[key] = time.monotonic()
        if self.metrics is not None:
            self.metrics.load_seconds.labels(resolved.name).observe(engine.load_seconds)
        log.info(
            "model loaded name=%s device=%s path=%s load_seconds=%.2f",
            resolved.name,
            engine.device,
            resolved.path,
            engine.load_seconds,
        )
        await self._evict_over_limit(keep=key)
        return engine

    def _engine_config(self, device: str) -> EngineConfig:
        s = self.settings
        return EngineConfig(
            device=device,
            max_batch=s.max_batch,
            kv_cache_gb=s.kv_cache_gb,
            kv_cache_precision=s.kv_cache_precision,
            cache_dir=s.cache_dir,
        )

    def _open(self, resolved: ResolvedModel) -> Engine:
        device = self.settings.device
        try:
            return Engine(resolved.name, resolved.path, self._engine_config(device))
        except Exception as exc:
            fallback = self.settings.fallback_device
            if not fallback or fallback == device:
                raise
            log.warning(
                "model %s failed on %s (%s); retrying on fallback device %s",
                resolved.name,
                device,
                str(exc).strip().splitlines()[0],
                fallback,
            )
            return Engine(resolved.name, resolved.path, self._engine_config(fallback))

    async def preload(self, names: list[str]) -> None:
        for name in names:
            try:
                await self.get(name)
            except errors.APIError as exc:
                log.error("preload of %s failed: %s", name, exc.message)

    # ------------------------------------------------------------ unloading

    async def _evict_over_limit(self, keep: str) -> None:
        while len(self._engines) > self.settings.max_loaded_models:
            victim = next(
                (k for k, e in self._engines.items() if k != keep and e.in_flight == 0), None
            )
            if victim is None:
                return  # every other model is busy; unload later rather than cut requests
            await self.unload(victim, reason="least recently used")

    async def unload(self, key: str, reason: str) -> None:
        engine = self._engines.pop(key, None)
        self._last_used.pop(key, None)
        if engine is None:
            return
        await asyncio.to_thread(engine.close)
        log.info("model unloaded name=%s reason=%s", engine.name, reason)

    def start_idle_unloader(self) -> None:
        if self.settings.idle_unload_seconds > 0:
            self._idle_task = asyncio.create_task(self._idle_loop())

    async def _idle_loop(self) -> None:
        idle = self.settings.idle_unload_seconds
        while True:
            await asyncio.sleep(min(idle / 2, 30.0))
            now = time.monotonic()
            for key, engine in list(self._engines.items()):
                if engine.in_flight == 0 and now - self._last_used.get(key, now) >= idle:
                    await self.unload(key, reason=f"idle {idle:.0f}s")

    async def close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        for key in list(self._engines):
            await self.unload(key, reason="shutdown")
