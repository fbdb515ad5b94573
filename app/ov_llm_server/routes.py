"""HTTP routes: thin, they hand the work to the services on ``app.state``."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import OPENVINO_GENAI_VERSION, __version__, errors
from .capabilities import card_facts, engine_kind
from .engine.supervisor import EngineState
from .model_manager import ModelManager, ModelSlot
from .placement import choose_device, choose_precision
from .protocol import ChatCompletionRequest, ModelCard, ModelList
from .protocol_anthropic import CountTokensRequest, MessagesRequest
from .protocol_audio import audio_form_schema
from .protocol_responses import ResponsesRequest
from .protocol_speech import SpeechRequest
from .protocol_surface import (
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    RerankRequest,
    TokenizeRequest,
)
from .registry import ModelEntry, resolve_model_path
from .serving.anthropic_messages import MessagesService
from .serving.common import Service
from .serving.responses import ResponsesService
from .settings import Settings


# Dependencies are coroutines: FastAPI runs a plain ``def`` dependency in its thread pool, a
# thread hop per request for a few attribute reads.
def bears_key(request: Request) -> bool:
    """The request carries the API key, or none is configured."""
    expected: str | None = request.app.state.api_key
    if expected is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:  # Anthropic's clients send the key as x-api-key
        scheme, token = "bearer", request.headers.get("x-api-key", "")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        token.strip().encode(), expected.encode()
    )


async def require_api_key(request: Request) -> None:
    if not bears_key(request):
        raise errors.APIError(
            401,
            "Missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _models(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.models
    return manager


Models = Annotated[ModelManager, Depends(_models)]

public = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
# vLLM's and Cohere's paths outside /v1, behind the same key.
root = APIRouter(dependencies=[Depends(require_api_key)])


@public.get("/health")
async def health(request: Request, models: Models) -> JSONResponse:
    snapshot = models.registry.snapshot()
    slots = models.slots()
    settings = models.settings
    # A first run: no registry file yet, the fallback model serves. Nothing is wrong.
    first_run = settings.model_path is not None and not models.registry.path.exists()
    problems = [f"registry: {snapshot.error}"] if snapshot.error and not first_run else []
    for slot in slots:
        supervisor = slot.supervisor
        assert supervisor is not None
        if supervisor.state is EngineState.FAILED:
            problems.append(f"model {slot.name}: failed to load ({supervisor.last_error})")
        elif supervisor.state is EngineState.RESTARTING or (
            supervisor.state is EngineState.LOADING and supervisor.restarts
        ):
            problems.append(f"model {slot.name}: restarting ({supervisor.last_error})")
        problems += [f"model {slot.name}: {warning}" for warning in _warnings(slot)]
    doctor = request.app.state.doctor
    if doctor is not None and doctor["usable"] is False:
        problems.append(f"device {doctor['device']}: {doctor['reason']}")
    # "error" (503): models were asked for and none of them can answer now.
    serving = [s for s in slots if s.supervisor and s.supervisor.state is EngineState.READY]
    down = bool(slots) and not serving and not any(_loading_first(s) for s in slots)
    status = "error" if down else ("degraded" if problems else "ok")
    in_use = sorted({s.supervisor.device for s in slots if s.supervisor and s.supervisor.device})
    body: dict[str, Any] = {
        "status": status,
        "device": settings.device,
        "available_devices": doctor["devices"] if doctor is not None else [],
        "devices_in_use": in_use,
        # A model runs elsewhere than placement.py put it: its device failed to load it.
        "fallback_device_in_use": any(
            s.supervisor.device != choose_device(s.resolved.entry, settings).device
            for s in slots
            if s.supervisor and s.supervisor.device
        ),
        "registry_count": len(snapshot.data.models),
        "problem_count": len(problems),
    }
    if not bears_key(request):
        # Paths, pids and error texts are for the operator, who has the key.
        body["loaded_models"] = [_engine_counts(slot) for slot in slots]
        return JSONResponse(body, status_code=503 if down else 200)
    body |= {
        # The doctor's verdict at start-up (None while it runs): usable, gpu_usable, reason,
        # remedy, devices, problems.
        "doctor": doctor,
        "registry_path": str(models.registry.path),
        "registry_error": snapshot.error,
        "fallback_model": str(settings.model_path) if settings.model_path else None,
        "loaded_models": [_engine_status(slot) for slot in slots],
        "problems": problems,
        "version": __version__,
        "openvino_version": OPENVINO_GENAI_VERSION,
        "pid": os.getpid(),
    }
    return JSONResponse(body, status_code=503 if down else 200)


def _loading_first(slot: ModelSlot) -> bool:
    supervisor = slot.supervisor
    return (
        supervisor is not None
        and supervisor.state is EngineState.LOADING
        and not supervisor.restarts
    )


def _engine_counts(slot: ModelSlot) -> dict[str, Any]:
    """What anyone may see of a model: its state and counts."""
    supervisor = slot.supervisor
    assert supervisor is not None
    return {
        "name": slot.name,
        "kind": slot.resolved.kind,
        "state": supervisor.state.value,
        "device": supervisor.device,
        "in_flight": slot.leases,
        "engine_requests": supervisor.engine.in_flight if supervisor.engine is not None else 0,
        "restarts": supervisor.restarts,
    }


def _engine_status(slot: ModelSlot) -> dict[str, Any]:
    supervisor = slot.supervisor
    assert supervisor is not None
    return {
        **_engine_counts(slot),
        "path": str(slot.resolved.path),
        "pid": supervisor.pid,
        "last_error": supervisor.last_error,
        "load_seconds": round(supervisor.load_seconds, 3),
        "speculative": supervisor.speculative,
        "precision": supervisor.precision,
        "warnings": _warnings(slot),
    }


def _warnings(slot: ModelSlot) -> list[str]:
    """What is wrong with a model that still serves (e.g. without the draft it was given)."""
    supervisor = slot.supervisor
    return [*slot.warnings, *(supervisor.warnings if supervisor is not None else ())]


@public.get("/metrics")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    for slot in request.app.state.models.slots():
        registry.queue_depth.labels(slot.name).set(slot.leases)
        engine = slot.supervisor.engine if slot.supervisor is not None else None
        registry.engine_requests.labels(slot.name).set(engine.in_flight if engine else 0)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


@v1.get("/models")
@v1.get("/v1/models", include_in_schema=False)  # LiteLLM with an api_base ending in /v1
async def list_models(models: Models) -> ModelList:
    registry_path = models.registry.path
    served: list[tuple[str, Path, ModelEntry | None]] = [
        (name, resolve_model_path(registry_path, entry), entry)
        for name, entry in models.registry.entries().items()
    ]
    fallback = models.settings.fallback_model_name()
    fallback_path = models.settings.model_path
    if (
        fallback is not None
        and fallback_path is not None
        and fallback not in {n for n, *_ in served}
    ):
        served.append((fallback, fallback_path, None))
    limit = models.settings.max_tokens_limit
    # Reading a model's files (and, the first time, probing its chat template in a child
    # process) stays off the event loop; the facts are cached per file version.
    facts = await asyncio.to_thread(lambda: [card_facts(p, e, limit) for _, p, e in served])
    cards: list[ModelCard] = []
    for (name, path, entry), fact in zip(served, facts, strict=True):
        slot = models.slot_at(path, entry)
        cards.append(
            ModelCard(
                id=name,
                created=_created(path),
                task=entry.task if entry else None,
                weight_format=entry.weight_format if entry else None,
                loaded=slot is not None,
                **_placement(slot, entry, models.settings),
                source="registry" if entry else "fallback",
                **fact,
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


async def _serve(request: Request, service: str, body: Any) -> Response:
    served: Service = getattr(request.app.state, service)
    return await served.create(body, request)


@v1.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _serve(request, "chat", body)


@v1.post("/responses", response_model=None)
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    responses: ResponsesService = request.app.state.responses
    return await responses.create(body, request)


@v1.get("/responses/{response_id}", response_model=None)
async def get_response(response_id: str, request: Request) -> JSONResponse:
    responses: ResponsesService = request.app.state.responses
    return JSONResponse(responses.get(response_id))


@v1.delete("/responses/{response_id}", response_model=None)
async def delete_response(response_id: str, request: Request) -> JSONResponse:
    responses: ResponsesService = request.app.state.responses
    return JSONResponse(responses.delete(response_id))


@v1.post("/messages", response_model=None)
async def create_message(body: MessagesRequest, request: Request) -> Response:
    messages: MessagesService = request.app.state.messages
    return await messages.create(body, request)


@v1.post("/messages/count_tokens", response_model=None)
async def count_message_tokens(body: CountTokensRequest, request: Request) -> Response:
    messages: MessagesService = request.app.state.messages
    return await messages.count_tokens(body, request)


@v1.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await _serve(request, "completions", body)


@v1.post("/embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    return await _serve(request, "embeddings", body)


@v1.post("/rerank", response_model=None)
@root.post("/rerank", response_model=None, include_in_schema=False)
@root.post("/v2/rerank", response_model=None, include_in_schema=False)
async def rerank(body: RerankRequest, request: Request) -> Response:
    return await _serve(request, "rerank", body)


@v1.post("/audio/speech", response_model=None)
async def audio_speech(body: SpeechRequest, request: Request) -> Response:
    return await _serve(request, "speech", body)


# Uploads of these paths may be as large as OV_MAX_AUDIO_BYTES, plus the form around the file.
AUDIO_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")
FORM_OVERHEAD_BYTES = 64 * 1024


# The form is read by the service (its file within OV_MAX_AUDIO_BYTES): described here for
# clients and the API's schema.
_AUDIO_FORM = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": audio_form_schema()}},
    }
}


@v1.post("/audio/transcriptions", response_model=None, openapi_extra=_AUDIO_FORM)
async def audio_transcriptions(request: Request) -> Response:
    return await _serve(request, "transcriptions", None)


@v1.post("/audio/translations", response_model=None, openapi_extra=_AUDIO_FORM)
async def audio_translations(request: Request) -> Response:
    return await _serve(request, "translations", None)


@root.post("/tokenize", response_model=None)
async def tokenize(body: TokenizeRequest, request: Request) -> Response:
    return await _serve(request, "tokenize", body)


@root.post("/detokenize", response_model=None)
async def detokenize(body: DetokenizeRequest, request: Request) -> Response:
    return await _serve(request, "detokenize", body)


def _placement(
    slot: ModelSlot | None, entry: ModelEntry | None, settings: Settings
) -> dict[str, str | None]:
    """The model's device and why (where it runs once loaded, where it would run otherwise),
    and its precision."""
    placement = choose_device(entry, settings)
    supervisor = slot.supervisor if slot is not None else None
    running = supervisor.device if supervisor is not None else None
    kind = engine_kind(entry.task if entry else None)
    precision = {
        "precision": supervisor.precision if supervisor is not None else None,
        "precision_hint": choose_precision(kind, running or placement.device, entry, settings),
    }
    if running is None or running == placement.device:
        return {"device": placement.device, "device_reason": placement.reason, **precision}
    assert supervisor is not None  # it runs somewhere
    why = supervisor.moved_because or f"it failed to load on {placement.device}"
    return {
        "device": running,
        "device_reason": f"OV_FALLBACK_DEVICE: {why} ({placement.reason})",
        **precision,
    }


def _created(path: Any) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0
