"""HTTP routes: thin, they hand the work to the services on ``app.state``."""

from __future__ import annotations

import os
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__, errors
from .capabilities import card_facts
from .engine import openvino_version
from .model_manager import ModelManager
from .protocol import ChatCompletionRequest, ModelCard, ModelList
from .registry import resolve_model_path
from .serving import ChatService


def require_api_key(request: Request) -> None:
    expected: str | None = request.app.state.api_key
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise errors.APIError(
            401,
            "Missing or invalid API key: send 'Authorization: Bearer <key>'",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _models(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.models
    return manager


Models = Annotated[ModelManager, Depends(_models)]

public = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


@public.get("/health")
async def health(request: Request, models: Models) -> JSONResponse:
    snapshot = models.registry.snapshot()
    loaded = models.loaded()
    wedged = [e for e in loaded if e.wedged]
    problems = [f"registry: {snapshot.error}"] if snapshot.error else []
    problems += [f"model {e.name}: engine failing ({e.last_error})" for e in wedged]
    problems += [
        f"model at {path}: failed to load ({reason})" for path, reason in models.failures().items()
    ]
    status = "error" if wedged else ("degraded" if problems else "ok")
    devices_in_use = sorted({e.device for e in loaded})
    body: dict[str, Any] = {
        "status": status,
        "device": request.app.state.settings.device,
        "available_devices": request.app.state.available_devices,
        "devices_in_use": devices_in_use,
        "fallback_device_in_use": any(e.device != models.settings.device for e in loaded),
        "registry_path": str(models.registry.path),
        "registry_count": len(snapshot.data.models),
        "registry_error": snapshot.error,
        "fallback_model": str(models.settings.model_path) if models.settings.model_path else None,
        "loaded_models": [
            {
                "name": e.name,
                "path": str(e.path),
                "device": e.device,
                "in_flight": e.in_flight,
                "load_seconds": round(e.load_seconds, 3),
                "healthy": not e.wedged,
            }
            for e in loaded
        ],
        "problems": problems,
        "version": __version__,
        "openvino_version": openvino_version(),
        "pid": os.getpid(),
    }
    return JSONResponse(body, status_code=503 if wedged else 200)


@public.get("/metrics")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    for engine in request.app.state.models.loaded():
        registry.queue_depth.labels(engine.name).set(engine.in_flight)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


@v1.get("/models")
@v1.get("/v1/models", include_in_schema=False)  # LiteLLM with an api_base ending in /v1
async def list_models(models: Models) -> ModelList:
    cards: list[ModelCard] = []
    registry_path = models.registry.path
    for name, entry in models.registry.entries().items():
        path = resolve_model_path(registry_path, entry)
        engine = models.engine_at(path)
        cards.append(
            ModelCard(
                id=name,
                created=_created(path),
                task=entry.task,
                weight_format=entry.weight_format,
                loaded=engine is not None,
                device=engine.device if engine else None,
                **card_facts(path, entry, models.settings.max_tokens_limit),
            )
        )
    fallback = models.settings.fallback_model_name()
    fallback_path = models.settings.model_path
    if fallback is not None and fallback_path is not None and fallback not in {c.id for c in cards}:
        engine = models.engine_at(fallback_path)
        cards.append(
            ModelCard(
                id=fallback,
                created=_created(fallback_path),
                loaded=engine is not None,
                device=engine.device if engine else None,
                source="fallback",
                **card_facts(fallback_path, None, models.settings.max_tokens_limit),
            )
        )
    return ModelList(data=cards)


@v1.get("/models/{name:path}")
async def get_model(name: str, models: Models) -> ModelCard:
    listing = await list_models(models)
    for card in listing.data:
        if card.id == name:
            return card
    raise errors.model_not_found(name)


@v1.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    service: ChatService = request.app.state.chat
    return await service.create(body, request)


def _created(path: Any) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0
