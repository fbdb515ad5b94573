"""Which model serves a request, and how long it stays loaded.

Runs in the HTTP process. :meth:`ModelManager.admit` resolves a requested name (a
registry entry, or the fallback model), refuses a model of another kind than the endpoint
serves (the registry's task decides), and takes a queue slot for it synchronously, before
any ``await``, so a burst cannot overrun ``OV_MAX_QUEUE``; requests waiting for a load hold
slots too. A request whose model must first take another's place (a swap) waits in the
swap queue instead, ``OV_MAX_SWAP_QUEUE`` requests at most, whatever their models. The
:class:`Lease` it returns keeps the model loaded from then until the engine's work for the
request is over (a generation's outputs may still be on their way to a slow client).

Loading makes room first: when ``OV_MAX_LOADED_MODELS`` are loaded, the least recently
used model that no request holds is unloaded (its engine process exits, so its memory
goes back to the system) before the new one starts. When every loaded model is held,
the least recently used one drains: the requests admitted for it before that moment are
served, those admitted after wait for their turn, and then it makes way. A request
waits for room within its deadline.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import errors
from .capabilities import engine_kind, serves
from .engine.client import EngineProcess, LoadError
from .engine.messages import EngineConfig, EngineKind, Speculation
from .engine.supervisor import EngineState, EngineUnavailable, Supervisor
from .metrics import Metrics
from .placement import choose_device, choose_precision, engine_config
from .registry import ModelEntry, RegistryWatcher, resolve_model_path
from .settings import Settings
from .speculative import resolve_speculation

log = logging.getLogger(__name__)

# Completions remembered per model to estimate how fast its queue drains (Retry-After).
_DRAIN_WINDOW = 32


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # the registry name, or the fallback model's name
    path: Path
    entry: ModelEntry | None  # None for the fallback model
    key: str = ""  # its slot's (slot_key): names that share it share one engine

    @property
    def kind(self) -> EngineKind:
        return engine_kind(self.entry.task if self.entry else None)


@dataclass
class LoadedModel:
    """What a request needs of a loaded model: the engine, and the name it asked for with
    that name's own registry entry (its parsers), which another name of the engine may not
    share."""

    name: str
    entry: ModelEntry | None
    engine: EngineProcess


@dataclass(eq=False)
class ModelSlot:
    """One engine as the manager tracks it, loaded or not: the names that resolve to the same
    slot key share it; ``resolved`` is the first of them."""

    resolved: ResolvedModel
    supervisor: Supervisor | None = None
    leases: int = 0  # admitted requests: waiting for the model, or using it
    swapping: int = 0  # leases waiting for the model to take another's place (the swap queue)
    admitted: int = 0  # leases ever taken: each lease's number
    # Draining: leases numbered below the cutoff are still served; ``entitled`` of them remain.
    drain_cutoff: int | None = None
    entitled: int = 0
    last_used: float = field(default_factory=time.monotonic)
    finished: deque[float] = field(default_factory=lambda: deque(maxlen=_DRAIN_WINDOW))
    # What the HTTP side found wrong with the entry at load (e.g. a draft model not in the
    # registry); the engine's own warnings are its supervisor's.
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.resolved.name

    @property
    def loaded(self) -> bool:
        """Holding (or about to hold) an engine process: counts against the limit."""
        return self.supervisor is not None and self.supervisor.state is not EngineState.FAILED

    def retry_after(self, excess: int) -> int:
        """Seconds until ``excess`` queue slots are likely free, from the recent drain rate."""
        if len(self.finished) < 2:
            return 1
        span = self.finished[-1] - self.finished[0]
        rate = (len(self.finished) - 1) / span if span > 0 else float("inf")
        return min(60, max(1, math.ceil(excess / rate)))


class Lease:
    """A request's hold on one model, from admission to the end of the engine's work."""

    def __init__(
        self, manager: ModelManager, slot: ModelSlot, resolved: ResolvedModel, *, swapping: bool
    ) -> None:
        self._manager = manager
        self.slot = slot
        self.resolved = resolved
        self.number = slot.admitted
        self._released = False
        self.swapping = swapping  # in the swap queue until the model is its

    @property
    def name(self) -> str:
        return self.resolved.name

    async def model(self) -> LoadedModel:
        """The loaded model, loading it (and making room) first; bound it with a timeout."""
        engine = await self._manager._acquire(self.slot, self.number)
        self._leave_swap_queue()
        return LoadedModel(self.resolved.name, self.resolved.entry, engine)

    def _leave_swap_queue(self) -> None:
        if self.swapping:
            self.swapping = False
            self._manager._swap_waiting -= 1
            self.slot.swapping -= 1

    def release(self, *, completed: bool = False) -> None:
        """Ends the hold; safe to call more than once. ``completed`` feeds Retry-After."""
        if self._released:
            return
        self._released = True
        self._leave_swap_queue()
        self._manager._release(self.slot, self.number, completed=completed)


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        registry: RegistryWatcher,
        metrics: Metrics,
        runtime_dir: Path,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.runtime_dir = runtime_dir
        self._slots: dict[str, ModelSlot] = {}
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._idle_task: asyncio.Task[None] | None = None
        self._unloading: set[asyncio.Task[None]] = set()
        self._swap_waiting = 0  # requests in the swap queue, every model's
        # Names are the clients' to choose: a set of them would grow without bound.
        self._fallback_logged = False

    # ------------------------------------------------------------ resolution

    def resolve(self, name: str) -> ResolvedModel:
        entry = self.registry.entries().get(name)
        if entry is not None:
            path = resolve_model_path(self.registry.path, entry)
            return ResolvedModel(name, path, entry, slot_key(path, entry, self.settings))
        fallback = self.settings.fallback_model_name()
        if self.settings.model_path is not None and fallback is not None:
            log.log(
                logging.DEBUG if self._fallback_logged else logging.INFO,
                "model %r is not in the registry: the fallback model %s serves it",
                name,
                self.settings.model_path,
            )
            self._fallback_logged = True
            path = self.settings.model_path
            return ResolvedModel(fallback, path, None, slot_key(path, None, self.settings))
        raise errors.model_not_found(name)

    def metric_label(self, name: str) -> str:
        """The metrics label of a requested name: bounded by the registry, unlike the names."""
        if name in self.registry.entries():
            return name
        return self.settings.fallback_model_name() or "unknown"

    # ------------------------------------------------------------ admission

    def admit(self, name: str, kind: EngineKind | None = None, endpoint: str = "") -> Lease:
        """A queue slot for ``name`` now, or an APIError (400 for a model of another ``kind``
        than ``endpoint`` serves, 404, 429, 503). Never awaits."""
        resolved = self.resolve(name)
        if kind is not None and not serves(resolved.kind, kind):
            raise errors.wrong_kind(name, resolved.kind, endpoint)
        slot = self._slots.get(resolved.key)
        if slot is None:
            slot = self._slots[resolved.key] = ModelSlot(resolved)
        if slot.supervisor is not None:
            try:
                slot.supervisor.check()
            except EngineUnavailable as exc:
                raise errors.unavailable(str(exc), retry_after=exc.retry_after) from None
        # A request whose model must first take another's place waits for that swap in a
        # queue of its own: refusing it (the model's queue is full of requests for its
        # previous turn, or of others waiting for the same swap) would refuse every burst
        # that alternates between models, though each would be answered in its turn.
        swapping = self._must_swap(slot)
        if swapping:
            if self._swap_waiting >= self.settings.max_swap_queue:
                raise errors.overloaded(name, retry_after=max(5, slot.retry_after(1)))
        elif slot.leases - slot.swapping >= self.settings.max_queue:
            excess = slot.leases - slot.swapping - self.settings.max_queue + 1
            raise errors.overloaded(name, retry_after=slot.retry_after(excess))
        lease = Lease(self, slot, resolved, swapping=swapping)
        if swapping:
            self._swap_waiting += 1
            slot.swapping += 1
        slot.leases += 1
        slot.admitted += 1
        slot.last_used = time.monotonic()
        return lease

    def _must_swap(self, slot: ModelSlot) -> bool:
        """Whether a request admitted now waits for ``slot`` to take another model's place:
        it is making way itself (the request comes after its cutoff), or it is not loaded
        and every place is taken or a swap is under way (the load lock is held only while
        models make way)."""
        if slot.drain_cutoff is not None:
            return True
        if slot.loaded:
            return False
        if self._load_lock.locked() or self._unloading:
            return True
        return sum(s.loaded for s in self._slots.values()) >= self.settings.max_loaded_models

    def _release(self, slot: ModelSlot, number: int, *, completed: bool) -> None:
        slot.leases -= 1
        if _entitled(slot, number):
            slot.entitled -= 1
        if completed:
            slot.finished.append(time.monotonic())
        slot.last_used = time.monotonic()
        if slot.leases == 0 and slot.supervisor is None:
            self._slots.pop(slot.resolved.key, None)
        self._pulse()

    def _pulse(self) -> None:
        """Wakes everything waiting for a lease to end or a model to unload."""
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------ loading

    async def _acquire(self, slot: ModelSlot, number: int) -> EngineProcess:
        while True:
            if slot.drain_cutoff is not None and not _entitled(slot, number):
                await self._changed.wait()  # its turn comes after the model made way
                continue
            supervisor = slot.supervisor
            if supervisor is not None and supervisor.state is EngineState.FAILED:
                try:
                    supervisor.check()
                except EngineUnavailable as exc:
                    raise errors.unavailable(str(exc), retry_after=exc.retry_after) from None
                slot.supervisor = None  # its retry time has come: load it afresh
            if slot.supervisor is None:
                # Not queued on the lock: the load under way may be waiting (while it makes
                # room) for requests like this one, whose model meanwhile got its engine.
                if self._load_lock.locked():
                    await self._changed.wait()
                    continue
                try:
                    async with self._load_lock:
                        if slot.supervisor is None:
                            await self._make_room(slot)
                            self._start(slot)
                finally:
                    self._pulse()
                continue
            supervisor = slot.supervisor
            try:
                engine = await supervisor.ready()
            except EngineUnavailable as exc:
                if slot.supervisor is not supervisor:
                    continue  # unloaded while this request waited: load it again
                raise errors.unavailable(str(exc), retry_after=exc.retry_after) from None
            except LoadError as exc:
                raise errors.unavailable(
                    f"Model '{slot.name}' failed to load: {_with_hint(slot, str(exc))}",
                    retry_after=max(1, math.ceil(supervisor.retry_after)),
                ) from exc
            if slot.supervisor is not supervisor:
                continue  # unloaded while this request waited
            return engine

    def _start(self, slot: ModelSlot) -> None:
        speculative, warning = resolve_speculation(
            slot.resolved.entry, self.registry.entries(), self.registry.path
        )
        slot.warnings = [warning] if warning else []
        if warning:
            log.warning("model %s: %s", slot.name, warning)
        placement = choose_device(slot.resolved.entry, self.settings)
        slot.supervisor = Supervisor(
            slot.name,
            slot.resolved.path,
            self._engine_configs(slot.resolved, speculative),
            self.runtime_dir,
            kind=slot.resolved.kind,
            load_timeout=self.settings.engine_load_timeout_seconds,
            stall_seconds=self.settings.engine_stall_seconds,
            on_step=self.metrics.engine_hop.observe,
            on_drafts=functools.partial(self.metrics.count_drafts, slot.name),
            on_restart=self.metrics.engine_restarts.labels(slot.name).inc,
            on_change=self._pulse,
            on_loaded=self.metrics.load_seconds.labels(slot.name).observe,
        )
        log.info(
            "model loading name=%s path=%s device=%s (%s)",
            slot.name,
            slot.resolved.path,
            placement.device,
            placement.reason,
        )

    def _engine_configs(
        self, resolved: ResolvedModel, speculative: Speculation | None = None
    ) -> list[EngineConfig]:
        """One per device to try: the model's own (placement.py), then OV_FALLBACK_DEVICE."""
        s = self.settings
        entry = resolved.entry
        devices = [choose_device(entry, s).device]
        if s.fallback_device and s.fallback_device not in devices:
            devices.append(s.fallback_device)
        return [engine_config(s, device, resolved.kind, entry, speculative) for device in devices]

    async def _make_room(self, wanted: ModelSlot) -> None:
        """Unloads models until ``wanted`` fits under the limit (called under the load lock)."""
        if self._unloading:  # stops whose callers left: their memory is not free yet
            await asyncio.wait(self._unloading)
        while sum(s.loaded for s in self._slots.values()) >= self.settings.max_loaded_models:
            others = sorted(
                (s for s in self._slots.values() if s.loaded and s is not wanted),
                key=lambda s: s.last_used,
            )
            if not others:
                return
            victim = next((s for s in others if s.leases == 0 and not _loading(s)), others[0])
            if victim.leases or _loading(victim):
                victim.drain_cutoff = victim.admitted
                victim.entitled = victim.leases
                log.info("model %s drains to make way for %s", victim.name, wanted.name)
                try:
                    while victim.entitled or _loading(victim):
                        await self._changed.wait()
                finally:
                    victim.drain_cutoff = None
                    victim.entitled = 0
            await self.unload(victim, reason=f"least recently used, making way for {wanted.name}")

    async def preload(self, names: list[str]) -> None:
        for name in names:
            try:
                lease = self.admit(name)
            except errors.APIError as exc:
                log.error("preload of %s failed: %s", name, exc.message)
                continue
            try:
                await lease.model()
            except errors.APIError as exc:
                log.error("preload of %s failed: %s", name, exc.message)
            finally:
                lease.release()

    # ------------------------------------------------------------ state

    def slots(self) -> list[ModelSlot]:
        """Models with an engine (loading, ready, restarting or failed)."""
        return [s for s in self._slots.values() if s.supervisor is not None]

    def slot_at(self, path: Path, entry: ModelEntry | None = None) -> ModelSlot | None:
        slot = self._slots.get(slot_key(path, entry, self.settings))
        return slot if slot is not None and slot.supervisor is not None else None

    # ------------------------------------------------------------ unloading

    async def unload(self, slot: ModelSlot, reason: str) -> None:
        """Stops the model's engine. The stop runs in a task of its own: a caller cancelled
        meanwhile (a request whose client left) does not leave a process half stopped."""
        supervisor, slot.supervisor = slot.supervisor, None
        if supervisor is None:
            return
        task = asyncio.create_task(self._stop(slot, supervisor, reason), name=f"unload-{slot.name}")
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)
        await asyncio.shield(task)

    async def _stop(self, slot: ModelSlot, supervisor: Supervisor, reason: str) -> None:
        try:
            await supervisor.stop()
        finally:
            self.metrics.forget_model(slot.name)
            if slot.leases == 0 and slot.supervisor is None:
                self._slots.pop(slot.resolved.key, None)
            log.info("model unloaded name=%s reason=%s", slot.name, reason)
            self._pulse()

    def start_idle_unloader(self) -> None:
        if self.settings.idle_unload_seconds > 0:
            self._idle_task = asyncio.create_task(self._idle_loop())

    async def _idle_loop(self) -> None:
        idle = self.settings.idle_unload_seconds
        while True:
            await asyncio.sleep(min(idle / 2, 30.0))
            now = time.monotonic()
            for slot in self.slots():
                if slot.leases == 0 and now - slot.last_used >= idle:
                    await self.unload(slot, reason=f"idle {idle:.0f}s")

    async def close(self) -> None:
        """Stops every engine at once: one after another, their stop timeouts would add up
        past the service manager's stop timeout."""
        if self._idle_task is not None:
            self._idle_task.cancel()
        await asyncio.gather(
            *(self.unload(slot, reason="shutdown") for slot in self.slots()),
            *self._unloading,
            return_exceptions=True,
        )


def slot_key(path: Path, entry: ModelEntry | None, settings: Settings) -> str:
    """Names share an engine only when everything that shapes the engine is the same: the
    model folder, the kind of engine its task picks, the device, the precision, the
    speculation and the voices. What shapes only the answer (tool and reasoning parsers) stays
    per name."""
    kind = engine_kind(entry.task if entry is not None else None)
    device = choose_device(entry, settings).device
    speculative = entry.speculative if entry is not None else None
    return json.dumps(
        [
            str(path),
            kind,
            device,
            choose_precision(kind, device, entry, settings),
            speculative.model_dump(mode="json") if speculative is not None else None,
            entry.voices if entry is not None else None,
        ]
    )


def _entitled(slot: ModelSlot, number: int) -> bool:
    """Whether a lease was admitted before its draining model's cutoff (and is served)."""
    return slot.drain_cutoff is not None and number < slot.drain_cutoff


def _loading(slot: ModelSlot) -> bool:
    return slot.supervisor is not None and slot.supervisor.state is EngineState.LOADING


def _with_hint(slot: ModelSlot, reason: str) -> str:
    if slot.resolved.path.suffix == ".gguf" and "gguf_open" in reason:
        # openvino_genai 2026.4 opens GGUF files read-write.
        return reason + " (the service user needs write access to the .gguf file)"
    return reason
