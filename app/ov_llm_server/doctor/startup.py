"""The doctor's verdict for the server at start-up, from a child process.

Enumerating devices initialises the GPU plugin, which can crash its process on a bad driver:
the server asks ``ov-llm-server doctor --json --quick`` in a subprocess instead, and shows
the verdict in /health.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from ..settings import Settings, child_environ

# The settings the doctor judges by, passed explicitly: the server's Settings may not come
# from this process's environment alone.
_SETTINGS_ENV = {
    "device": "OV_DEVICE",
    "fallback_device": "OV_FALLBACK_DEVICE",
    "int4_device": "OV_INT4_DEVICE",
    "registry_path": "OV_REGISTRY_PATH",
    "model_path": "OV_MODEL_PATH",
    "cache_dir": "OV_CACHE_DIR",
    "kv_cache_precision": "OV_KV_CACHE_PRECISION",
}


def _doctor_env(settings: Settings) -> dict[str, str]:
    env = child_environ()
    for field, name in _SETTINGS_ENV.items():
        value = getattr(settings, field)
        env[name] = "" if value is None else str(value)
    return env


def _failed(settings: Settings, reason: str, seconds: float) -> dict[str, Any]:
    return {
        "device": settings.device,
        "usable": None,
        "gpu_usable": None,
        "serves_on": None,
        "reason": f"the doctor could not tell: {reason}",
        "remedy": "run `ov-llm-server doctor` (as the service: sudo ov-server-doctor)",
        "devices": [],
        "problems": [],
        "seconds": round(seconds, 2),
    }


async def startup_verdict(settings: Settings, timeout: float) -> dict[str, Any]:
    """The quick doctor's verdict: ``usable`` (OV_DEVICE can serve), ``gpu_usable``,
    ``serves_on``, ``reason`` and ``remedy``, OpenVINO's ``devices`` and the error-level
    ``problems``. ``usable`` and ``gpu_usable`` are None when the doctor itself failed or did
    not answer within ``timeout`` seconds; ``reason`` then says so. Never raises."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ov_llm_server",
        "doctor",
        "--json",
        "--quick",
        "--timeout",
        str(max(timeout - 1.0, 1.0)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_doctor_env(settings),
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        # The doctor's own child is in its session too: end them together.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return _failed(settings, f"no answer within {timeout:g} s", time.monotonic() - started)
    seconds = time.monotonic() - started
    try:
        report = json.loads(stdout)
        verdict = report["verdict"]
    except (ValueError, KeyError, TypeError):
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return _failed(
            settings, f"exit status {process.returncode} without a report {tail[0]}", seconds
        )
    return {
        "device": verdict["device"],
        "usable": verdict["usable"],
        "gpu_usable": verdict["gpu_usable"],
        "serves_on": verdict["serves_on"],
        "reason": verdict["reason"],
        "remedy": verdict["remedy"],
        "devices": [d["name"] for d in report["openvino"]["devices"]],
        "problems": [f["message"] for f in report["findings"] if f["severity"] == "error"],
        "seconds": round(seconds, 2),
    }
