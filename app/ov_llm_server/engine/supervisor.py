"""Keeping one model's engine process alive: start it, notice its death, start it again.

Runs in the HTTP process. States, as ``/health`` shows them:

* ``loading``: a process is loading the model; requests that caused the load wait for it.
* ``ready``: serving.
* ``restarting``: the process died (signal, OOM kill, segfault, a broken step, a stall)
  and a fresh one is on its way, after a backoff when it keeps dying. New requests get
  503 with ``Retry-After`` until it is ready, so a router can send them elsewhere.
* ``failed``: the model cannot be loaded (on the device, nor on the fallback device), or
  its engine process cannot even be started (its sockets, the spawn); requests get 503 with
  the reason, and the start is tried again after a while.
* ``stopped``: not running (never loaded, or unloaded).

A model whose engine keeps crashing while it runs (``CRASH_LIMIT`` times within
``CRASH_WINDOW_SECONDS``) on one device moves to the next configured one (OV_FALLBACK_DEVICE),
as one that cannot load there does; its ``warnings`` say so. A request that crashed the
engine is not sent again (:mod:`.quarantine`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from .client import EngineProcess, LoadError
from .messages import EngineConfig, EngineKind
from .quarantine import Quarantine

log = logging.getLogger(__name__)

# A model whose load failed is tried again after this many seconds, not on every request.
LOAD_RETRY_SECONDS = 30.0
# An engine process that could not even start (no socket, no spawn) cost nothing to try:
# its cause (a full file table, a folder in the way) may pass soon.
START_RETRY_SECONDS = 5.0
# Runtime crashes on one device that move the model to the next device.
CRASH_LIMIT = 3
CRASH_WINDOW_SECONDS = 600.0
# Restart backoff: none after one crash, then doubling up to the cap. A process that
# stayed up this long without dying is healthy again, and the count starts over.
MAX_RESTART_BACKOFF_SECONDS = 60.0
STABLE_AFTER_SECONDS = 60.0


def restart_backoff(crashes: int) -> float:
    """Seconds to wait before restarting after ``crashes`` deaths in a row: 0, 1, 2, 4 ... 60."""
    return 0.0 if crashes <= 1 else min(2.0 ** (crashes - 2), MAX_RESTART_BACKOFF_SECONDS)


class EngineState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


class EngineUnavailable(Exception):
    """No engine to serve now; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class Supervisor:
    """One model's engine process, kept running. ``await ready()`` gives the process."""

    def __init__(
        self,
        name: str,
        path: Path,
        configs: list[EngineConfig],
        runtime_dir: Path,
        *,
        kind: EngineKind = "llm",
        load_timeout: float,
        stall_seconds: float,
        on_step: Callable[[float], None] | None = None,
        on_drafts: Callable[[int, int], None] | None = None,
        on_restart: Callable[[], None] | None = None,
        on_change: Callable[[], None] | None = None,
        on_loaded: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.kind: EngineKind = kind
        self._configs = configs  # the device first, then the fallback device, if any
        self._device = 0  # the config that starts next: moves on when one fails its model
        self._runtime_dir = runtime_dir
        self._load_timeout = load_timeout
        self._stall = stall_seconds
        self._on_step = on_step
        self._on_drafts = on_drafts
        self._on_restart = on_restart
        self._on_change = on_change
        self._on_loaded = on_loaded
        self._state = EngineState.STOPPED
        self.engine: EngineProcess | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.load_seconds = 0.0
        self._load: asyncio.Task[EngineProcess] | None = None
        self._restart: asyncio.Task[None] | None = None
        self._restart_at = 0.0
        self._retry_at = 0.0
        self._crashes = 0
        self._ready_since = 0.0
        self._restarting = False
        self._device_crashes: deque[float] = deque()
        self._notes: list[str] = []
        # Why the model left its first device, once it has: it failed to load there, or its
        # engine kept crashing there.
        self.moved_because: str | None = None
        self.quarantine = Quarantine(name)

    @property
    def state(self) -> EngineState:
        return self._state

    @state.setter
    def state(self, state: EngineState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change()

    @property
    def device(self) -> str | None:
        return self.engine.device if self.engine is not None else None

    @property
    def speculative(self) -> str | None:
        """The speculative method the engine runs, if any."""
        return self.engine.speculative if self.engine is not None else None

    @property
    def precision(self) -> str | None:
        """The precision the engine computes in (f32, bf16, f16), once loaded."""
        return self.engine.precision if self.engine is not None else None

    @property
    def warnings(self) -> tuple[str, ...]:
        """What an operator should know: the engine's report at load (e.g. its draft did not
        load), and the device it left because it kept crashing there."""
        return (*self._notes, *(self.engine.warnings if self.engine is not None else ()))

    @property
    def pid(self) -> int | None:
        return self.engine.pid if self.engine is not None and self.engine.alive else None

    @property
    def retry_after(self) -> float:
        """Seconds until a failed model is tried again."""
        return max(self._retry_at - time.monotonic(), 0.0)

    def check(self) -> None:
        """Refuses at once (EngineUnavailable) while restarting or failed; else returns."""
        now = time.monotonic()
        if self.state is EngineState.RESTARTING:
            wait = max(self._restart_at - now, 0) + max(self.load_seconds, 1.0)
            raise EngineUnavailable(
                f"Model '{self.name}' is restarting after its engine {self.last_error}", wait
            )
        if self.state is EngineState.LOADING and self._restarting:
            raise EngineUnavailable(
                f"Model '{self.name}' is restarting after its engine {self.last_error}",
                max(self.load_seconds, 1.0),
            )
        if self.state is EngineState.FAILED and now < self._retry_at:
            raise EngineUnavailable(
                f"Model '{self.name}' failed to load: {self.last_error}", self._retry_at - now
            )

    async def ready(self) -> EngineProcess:
        """The running engine, loading it first if needed (bound the wait with a timeout)."""
        self.check()
        if self.state is EngineState.READY and self.engine is not None:
            return self.engine
        if self._load is None:
            self._load = asyncio.create_task(self._start(), name=f"load-{self.name}")
        load = self._load
        try:
            return await asyncio.shield(load)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if load.cancelled() and task is not None and not task.cancelling():
                raise EngineUnavailable(
                    f"Model '{self.name}' was unloaded while loading", 1
                ) from None
            raise

    async def _start(self) -> EngineProcess:
        self.state = EngineState.LOADING
        errors: list[str] = []
        try:
            engine = None
            retry = LOAD_RETRY_SECONDS
            if not self.path.exists():
                errors.append(f"model path {self.path} does not exist")
            else:
                try:
                    engine = await self._start_engine(errors)
                except Exception as exc:
                    log.exception("engine of model %s could not be started", self.name)
                    errors.append(f"the engine process could not be started: {exc}")
                    retry = START_RETRY_SECONDS
            if engine is None:
                self.last_error = "; ".join(errors)
                self._retry_at = time.monotonic() + retry
                self.state = EngineState.FAILED
                raise LoadError(self.last_error)
            self.engine = engine
            self.load_seconds = engine.load_seconds
            self._ready_since = time.monotonic()
            log.info(
                "model loaded name=%s device=%s precision=%s path=%s load_seconds=%.2f pid=%s",
                self.name,
                engine.device,
                engine.precision or "-",
                self.path,
                engine.load_seconds,
                engine.pid,
            )
            if self._on_loaded is not None:
                self._on_loaded(engine.load_seconds)
            self.state = EngineState.READY
            return engine
        finally:
            self._load = None

    async def _start_engine(self, errors: list[str]) -> EngineProcess | None:
        """An engine on the current device, else on the next ones; None if none loads. An
        engine that cannot even start raises: another device would not change that."""
        for index in range(self._device, len(self._configs)):
            config = self._configs[index]
            engine = EngineProcess(
                self.name,
                self.path,
                config,
                self._runtime_dir,
                kind=self.kind,
                on_exit=self._exited,
                on_step=self._on_step,
                on_drafts=self._on_drafts,
                stall_seconds=self._stall,
                quarantine=self.quarantine,
            )
            try:
                await engine.start(self._load_timeout)
            except LoadError as exc:
                errors.append(f"on {config.device}: {exc}")
                if config is not self._configs[-1]:
                    self.moved_because = f"it failed to load on {config.device}"
                    log.warning(
                        "model %s failed on %s (%s); retrying on fallback device %s",
                        self.name,
                        config.device,
                        exc,
                        self._configs[index + 1].device,
                    )
                continue
            self._device = index
            return engine
        return None

    def _exited(self, engine: EngineProcess) -> None:
        if engine is not self.engine or engine.stopping:
            return
        now = time.monotonic()
        if now - self._ready_since > STABLE_AFTER_SECONDS:
            self._crashes = 0
        self._crashes += 1
        self.restarts += 1
        self.last_error = engine.exit_description
        if engine.blamed:
            self.quarantine.strike(engine.blamed, named=True)
        else:
            self.quarantine.strike(engine.lost, named=False)
        backoff = 0.0 if self._move_on(engine, now) else restart_backoff(self._crashes)
        log.error(
            "engine of model %s (pid %s) %s; restarting it%s",
            self.name,
            engine.pid,
            engine.exit_description,
            f" in {backoff:.0f}s" if backoff else "",
        )
        if self._on_restart is not None:
            self._on_restart()
        self.engine = None
        self.state = EngineState.RESTARTING
        self._restart_at = now + backoff
        self._restart = asyncio.create_task(
            self._restart_after(backoff), name=f"restart-{self.name}"
        )

    def _move_on(self, engine: EngineProcess, now: float) -> bool:
        """Counts a crash on the engine's device; True when it moves the model to the next."""
        crashes = self._device_crashes
        crashes.append(now)
        while now - crashes[0] > CRASH_WINDOW_SECONDS:
            crashes.popleft()
        if len(crashes) < CRASH_LIMIT or self._device + 1 >= len(self._configs):
            return False
        self._device += 1
        self.moved_because = (
            f"its engine crashed {CRASH_LIMIT} times within {CRASH_WINDOW_SECONDS:.0f}s "
            f"on {engine.device}"
        )
        crashes.clear()
        self._crashes = 0
        # What crashed on the old device may run on the new one.
        self.quarantine.clear()
        note = (
            f"moved from {engine.device} to {self._configs[self._device].device}: its engine "
            f"crashed {CRASH_LIMIT} times within {CRASH_WINDOW_SECONDS:.0f}s on {engine.device} "
            f"(last: {engine.exit_description})"
        )
        log.warning("model %s %s", self.name, note)
        self._notes.append(note)
        return True

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._restarting = True
        self._load = asyncio.create_task(self._start(), name=f"load-{self.name}")
        try:
            await asyncio.shield(self._load)
        except LoadError:
            log.error("model %s could not be restarted: %s", self.name, self.last_error)
        finally:
            self._restarting = False
            self._restart = None

    async def stop(self) -> None:
        """Ends the engine process (in-flight requests are cancelled) and stays stopped."""
        for task in (self._restart, self._load):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._restart = self._load = None
        engine, self.engine = self.engine, None
        self.state = EngineState.STOPPED
        if engine is not None:
            await engine.stop()
