"""The application factory: settings in, a wired FastAPI app out."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from . import OPENVINO_GENAI_VERSION, __version__
from .doctor.startup import startup_verdict
from .errors import install_error_handlers
from .metrics import Metrics
from .middleware import BodyLimitMiddleware, RequestIdMiddleware
from .model_manager import ModelManager
from .registry import RegistryWatcher
from .routes import AUDIO_PATHS, FORM_OVERHEAD_BYTES, public, root, v1
from .serving import (
    ChatService,
    CompletionService,
    DetokenizeService,
    EmbeddingService,
    RerankService,
    SpeechService,
    TokenizeService,
)
from .serving.anthropic_messages import MessagesService
from .serving.response_store import ResponseStore
from .serving.responses import ResponsesService
from .serving.transcriptions import TranscriptionService, TranslationService
from .settings import Settings

log = logging.getLogger("ov_llm_server")


async def check_devices(app: FastAPI, settings: Settings) -> None:
    """The doctor's quick verdict on OV_DEVICE, in a child process (listing devices initialises
    the GPU plugin, which a broken driver can crash): shown in /health, its reason logged."""
    verdict = await startup_verdict(settings, timeout=60.0)
    app.state.doctor = verdict
    log.info(
        "openvino devices: %s (doctor: %.1f s)",
        ", ".join(verdict["devices"]) or "none",
        verdict["seconds"],
    )
    if verdict["usable"] is not True:
        log.warning(
            "device %s: %s%s; remedy: %s",
            settings.device,
            verdict["reason"],
            f"; models will fall back to {settings.fallback_device}"
            if settings.fallback_device
            else "",
            verdict["remedy"],
        )


def make_runtime_dir() -> Path:
    """A private folder for the engines' sockets: under systemd's ``RuntimeDirectory=``
    (``$RUNTIME_DIRECTORY``, in /run, which no tmpfiles rule ages away) when there is one,
    else under the temporary folder. Engines make it again if it vanishes."""
    base = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or None
    if base is not None:
        Path(base).mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="ov-llm-server-", dir=base))


def create_app(settings: Settings) -> FastAPI:
    registry = RegistryWatcher(settings.registry_path)
    metrics = Metrics()
    runtime_dir = make_runtime_dir()
    models = ModelManager(settings, registry, metrics, runtime_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        snapshot = registry.snapshot()
        log.info(
            "ov-llm-server starting version=%s openvino=%s device=%s fallback_device=%s "
            "inference_precision=%s registry=%s registry_models=%d fallback_model=%s "
            "cache_dir=%s auth=%s",
            __version__,
            OPENVINO_GENAI_VERSION,
            settings.device,
            settings.fallback_device or "-",
            settings.inference_precision,
            settings.registry_path,
            len(snapshot.data.models),
            settings.model_path or "-",
            settings.cache_dir or "-",
            "on" if app.state.api_key else "off",
        )
        if snapshot.error:
            log.warning("registry: %s", snapshot.error)
        # Not awaited: the doctor takes a second or two, and the models need none of it.
        doctor = asyncio.create_task(check_devices(app, settings), name="doctor")
        models.start_idle_unloader()
        await models.preload(settings.preload_models)
        try:
            yield
        finally:
            doctor.cancel()
            await models.close()
            shutil.rmtree(runtime_dir, ignore_errors=True)
            log.info("ov-llm-server stopped")

    app = FastAPI(
        title="ov-llm-server",
        version=__version__,
        summary="OpenAI-compatible backend for OpenVINO models: chat, completions, "
        "embeddings, rerank",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.api_key = settings.resolved_api_key()
    app.state.doctor = None  # until check_devices has the verdict
    app.state.models = models
    app.state.metrics = metrics
    for name, service in (
        ("chat", ChatService),
        ("completions", CompletionService),
        ("embeddings", EmbeddingService),
        ("rerank", RerankService),
        ("speech", SpeechService),
        ("tokenize", TokenizeService),
        ("detokenize", DetokenizeService),
        ("transcriptions", TranscriptionService),
        ("translations", TranslationService),
    ):
        setattr(app.state, name, service(settings, models, metrics))
    store = ResponseStore(settings.responses_store_max, settings.responses_store_bytes)
    app.state.responses = ResponsesService(app.state.chat, store)
    app.state.messages = MessagesService(app.state.chat, app.state.tokenize)
    install_error_handlers(app)
    app.include_router(public)
    app.include_router(v1)
    app.include_router(root)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        # An audio upload, with room for the form around the file.
        larger={AUDIO_PATHS: settings.max_audio_bytes + FORM_OVERHEAD_BYTES},
    )
    app.add_middleware(RequestIdMiddleware)
    return app
