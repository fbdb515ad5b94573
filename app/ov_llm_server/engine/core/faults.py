"""Fault injection at named stages of the engine loop, for the fault tests.

Off unless ``OV_ENGINE_FAULTS_FILE`` names a file. When that file exists and holds a
stage's name, the engine raises at that stage once and deletes the file, so a test can
break a real engine in the middle of a real request. Costs one ``stat`` per stage when on.
"""

from __future__ import annotations

import os
from pathlib import Path

STAGES = ("receive", "add", "step", "read", "detokenize", "send")

_FILE = os.environ.get("OV_ENGINE_FAULTS_FILE")
_PATH = Path(_FILE) if _FILE else None


class InjectedFault(RuntimeError):
    """Raised where a test asked for a fault."""


def check(stage: str) -> None:
    if _PATH is None:
        return
    try:
        wanted = _PATH.read_text(encoding="utf-8").strip()
    except OSError:
        return
    if wanted == stage:
        _PATH.unlink(missing_ok=True)
        raise InjectedFault(f"fault injected at stage {stage!r}")
