"""Running ``ov_child`` (or any Python) in a child process that may crash or hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

CHILD_MODULE = "ov_llm_server.doctor.ov_child"


@dataclass
class ChildOutcome:
    data: dict[str, Any] | None  # the child's JSON object, when it wrote one
    error: str | None  # why there is no usable result, in one line
    seconds: float
    crashed_by: str | None = None  # the signal that killed it ("SIGSEGV")
    timed_out: bool = False


def _stderr_tail(text: str, lines: int = 3) -> str:
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " / ".join(tail)[-400:]


def run_python(args: list[str], timeout: float) -> ChildOutcome:
    """``python ARGS`` in its own session, killed as a group when it outlives ``timeout``."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return ChildOutcome(
            None, f"no answer within {timeout:g} s", time.monotonic() - started, timed_out=True
        )
    seconds = time.monotonic() - started
    if process.returncode < 0:
        name = signal.Signals(-process.returncode).name
        tail = _stderr_tail(stderr)
        return ChildOutcome(
            None, f"crashed with {name}" + (f" ({tail})" if tail else ""), seconds, name
        )
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = _stderr_tail(stderr)
        return ChildOutcome(
            None,
            f"exited with status {process.returncode} and no result"
            + (f" ({tail})" if tail else ""),
            seconds,
        )
    if not isinstance(data, dict):
        return ChildOutcome(None, "answered something other than a JSON object", seconds)
    error = data.get("error")
    return ChildOutcome(data, str(error) if error else None, seconds)


def run_child(args: list[str], timeout: float) -> ChildOutcome:
    return run_python(["-m", CHILD_MODULE, *args], timeout)
