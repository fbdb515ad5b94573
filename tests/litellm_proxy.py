"""A real LiteLLM proxy process on 127.0.0.1, started from a configuration file."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, free_port

LITELLM_START_TIMEOUT = 240.0  # its imports alone take most of a minute on two busy cores

requires_litellm = pytest.mark.skipif(
    shutil.which("litellm", path=str(Path(sys.executable).parent)) is None,
    reason="litellm[proxy] is not installed (pip install -e '.[dev]')",
)


@dataclass
class Proxy:
    base_url: str
    key: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def litellm_config(server: LiveServer, *args: str, **env: str) -> str:
    """``ov-llm-server litellm-config ARGS`` in the server's environment (plus ``env``)."""
    result = subprocess.run(
        [sys.executable, "-m", "ov_llm_server", "litellm-config", *args],
        env={**server.env, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


@contextmanager
def running_proxy(config: str, workdir: Path) -> Iterator[Proxy]:
    """LiteLLM's proxy serving ``config`` until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "litellm.yaml"
    config_path.write_text(config, encoding="utf-8")
    port = free_port()
    key = "sk-" + secrets.token_hex(16)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": key,
        # Offline: no model cost map download, no telemetry, no database.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.pop("DATABASE_URL", None)
    proxy = Proxy(f"http://127.0.0.1:{port}", key, workdir / "litellm.log")
    executable = str(Path(sys.executable).parent / "litellm")
    with proxy.log_path.open("ab") as log:
        process = subprocess.Popen(
            [executable, "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        deadline = time.monotonic() + LITELLM_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"litellm exited early:\n{proxy.log()[-4000:]}")
            try:
                if httpx.get(f"{proxy.base_url}/health/readiness", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"litellm not ready in time:\n{proxy.log()[-4000:]}")
            time.sleep(0.25)
        yield proxy
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
