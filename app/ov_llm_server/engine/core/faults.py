"""Fault injection in engine processes, for the fault tests. Every hook is off unless its
environment variable is set, and then costs one ``stat`` (or a substring test) where it sits.

* ``OV_ENGINE_FAULTS_FILE``: when that file holds a stage's name, the engine raises at that
  stage once and deletes the file, so a test can break a real engine in the middle of a real
  request. The word ``garble`` instead makes the engine's next message unreadable.
* ``OV_ENGINE_GATE_FILE``: while that file exists and holds a stage's name (or ``load``),
  the engine waits there: a test holds a restart, or lets requests queue up for one batch.
* ``OV_ENGINE_POISON``: a request whose text contains this marker makes the pipeline call
  that runs it fail, as a request that breaks the model would.
* ``OV_ENGINE_CRASH_DEVICE``: on this device the engine crashes (SIGSEGV) whenever it has
  work, as a model that loads on a GPU but crashes while it runs.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

STAGES = ("receive", "add", "step", "read", "detokenize", "send")
# Gate only: before the model loads.
LOAD = "load"
GARBLE = "garble"
GARBLED = b"\xc1 not msgpack"


def _path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


_FILE = _path("OV_ENGINE_FAULTS_FILE")
_GATE = _path("OV_ENGINE_GATE_FILE")
_POISON = os.environ.get("OV_ENGINE_POISON") or None
_CRASH_DEVICE = os.environ.get("OV_ENGINE_CRASH_DEVICE") or None
_poisoned: set[int] = set()


class InjectedFault(RuntimeError):
    """Raised where a test asked for a fault."""


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _take(word: str) -> bool:
    """Whether the faults file asks for ``word``; it is deleted if so (a fault fires once)."""
    if _FILE is not None and _read(_FILE) == word:
        _FILE.unlink(missing_ok=True)
        return True
    return False


def hold(stage: str) -> None:
    """Waits while the gate file names ``stage``."""
    while _GATE is not None and _read(_GATE) == stage:
        time.sleep(0.02)


def check(stage: str) -> None:
    hold(stage)
    if _take(stage):
        raise InjectedFault(f"fault injected at stage {stage!r}")


def garble(frame: bytes) -> bytes:
    """``frame``, or bytes no reader can decode when the faults file says ``garble``."""
    return GARBLED if _take(GARBLE) else frame


def mark(rid: int, text: str) -> None:
    """Remembers a generation whose prompt carries the poison marker."""
    if _POISON is not None and _POISON in text:
        _poisoned.add(rid)


def check_poison(rids: Iterable[int] = (), texts: Iterable[str] = ()) -> None:
    """Fails a pipeline call that runs a marked request, or a text with the marker."""
    if _POISON is None:
        return
    if _poisoned.intersection(rids) or any(_POISON in text for text in texts):
        raise InjectedFault("poison request: the pipeline call failed")


def check_device(device: str) -> None:
    if _CRASH_DEVICE is not None and device == _CRASH_DEVICE:
        os.kill(os.getpid(), signal.SIGSEGV)
