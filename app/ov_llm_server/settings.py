"""The service's one settings object, read from ``OV_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODELS_DIR = Path("~/models")
DEFAULT_REGISTRY_PATH = DEFAULT_MODELS_DIR / "converted_models" / "registry.json"

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]
# OpenVINO's INFERENCE_PRECISION_HINT; "auto" lets precision.py choose per engine kind.
InferencePrecision = Literal["auto", "f32", "bf16", "f16"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OV_", env_file=None, extra="ignore", validate_default=True
    )

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    device: str = Field(
        "GPU",
        min_length=1,
        description="OpenVINO device for inference: GPU, CPU, or any device string OpenVINO "
        "accepts (for example GPU.0 or AUTO:GPU,CPU).",
    )
    fallback_device: str | None = Field(
        None,
        description="Device to retry on when a model fails to load on OV_DEVICE (e.g. CPU).",
    )
    int4_device: str | None = Field(
        "CPU",
        description="Device for 4-bit (int4) models whose registry entry names no device, when "
        "OV_DEVICE is a GPU: int4 is unstable on the UHD 630's GPU stack. Empty runs them on "
        "OV_DEVICE like every other model.",
    )
    audio_device: str | None = Field(
        "CPU",
        description="Device for speech models (Whisper, text to speech) whose registry entry "
        "names none: the iGPU is kept for the language models. Empty runs them on OV_DEVICE.",
    )
    max_audio_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1024,
        description="Largest audio file /v1/audio/transcriptions and /translations accept "
        "(413 over it).",
    )
    max_audio_seconds: float = Field(
        900,
        gt=0,
        le=86400,
        description="Longest audio a transcription request may carry (400 over it).",
    )
    registry_path: Path = Field(
        DEFAULT_REGISTRY_PATH, description="Model registry file (registry.json)."
    )
    model_path: Path | None = Field(
        None,
        description="Fallback model (an OpenVINO IR folder or a .gguf file) served for model "
        "names the registry does not list.",
    )
    models_dir: Path = Field(
        DEFAULT_MODELS_DIR,
        description="Models root used by ov-convert-model: sources in it, converted_models/ "
        "and og_models/ below it.",
    )
    log_level: LogLevel = Field("INFO", description="Log level.")
    cache_dir: Path | None = Field(
        None, description="Compiled-model cache (OpenVINO CACHE_DIR); speeds up restarts."
    )
    api_key: SecretStr | None = Field(None, description="Bearer key required on /v1/* when set.")
    api_key_file: Path | None = Field(
        None, description="File holding the bearer key (alternative to OV_API_KEY)."
    )
    preload_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated model names to load at start."
    )
    max_loaded_models: int = Field(
        2, ge=1, le=64, description="Loaded models kept at most; the least recently used unloads."
    )
    idle_unload_seconds: float = Field(
        0, ge=0, description="Unload a model idle this long (0 keeps it loaded)."
    )
    max_queue: int = Field(
        32, ge=1, le=4096, description="Requests per model waiting or running before 429."
    )
    max_swap_queue: int = Field(
        256,
        ge=0,
        le=65536,
        description="Requests waiting, server-wide, for their model to take another's place "
        "(OV_MAX_LOADED_MODELS reached) before 429; they do not count against OV_MAX_QUEUE.",
    )
    max_batch: int = Field(
        8, ge=1, le=256, description="Sequences one model generates at the same time."
    )
    encoder_max_batch: int = Field(
        32,
        ge=1,
        le=1024,
        description="Inputs one embedding or rerank model call takes at most: the requests "
        "waiting together (up to this many inputs) share one call.",
    )
    kv_cache_gb: int = Field(
        0, ge=0, le=64, description="KV cache per loaded model in GB; 0 grows it with demand."
    )
    kv_cache_precision: str | None = Field(
        None,
        description="KV cache precision (OpenVINO KV_CACHE_PRECISION, e.g. f16 or u8); "
        "unset keeps the plugin's default.",
    )
    inference_precision: InferencePrecision = Field(
        "auto",
        description="Precision models compute in (OpenVINO INFERENCE_PRECISION_HINT): f32, "
        "bf16 or f16; auto: f32 for embedding and rerank models on the CPU, the device's own "
        "default for generation (f32 or bf16 on a CPU, f16 on a GPU). A registry entry's "
        "inference_precision wins.",
    )
    max_tokens_limit: int = Field(
        4096, ge=1, description="Upper bound on max_tokens of one request."
    )
    default_max_tokens: int = Field(
        1024, ge=1, description="max_tokens used when a request sets none."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    max_messages: int = Field(512, ge=1, description="Most messages in one request.")
    max_n: int = Field(
        4,
        ge=1,
        le=64,
        description="Most choices (n) one chat or completions request may ask for; each is "
        "a sequence of its own in the engine's batch.",
    )
    max_images: int = Field(
        8, ge=0, description="Most images (image_url parts) in one chat request to a vision model."
    )
    max_image_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="Largest image file (decoded from its data: URL) accepted; the request "
        "body limit (max_body_bytes) applies to the whole request first.",
    )
    max_image_pixels: int = Field(
        4096 * 4096,
        ge=1,
        description="Most pixels (width x height) of one image; checked before it is decoded.",
    )
    image_fetch: bool = Field(
        False,
        description="Fetch http(s) image URLs of chat requests (public addresses only, "
        "within OV_MAX_IMAGE_BYTES and OV_IMAGE_FETCH_SECONDS); off: such a URL is a 400.",
    )
    image_fetch_private: bool = Field(
        False,
        description="With image_fetch: also fetch from private, loopback and link-local "
        "addresses (a homelab's own file server).",
    )
    image_fetch_seconds: float = Field(
        10, gt=0, le=120, description="Longest fetching one image URL may take."
    )
    max_speech_chars: int = Field(
        4096,
        ge=1,
        le=100_000,
        description="Most characters of text one /v1/audio/speech request may ask to speak.",
    )
    schema_compile_seconds: float = Field(
        3,
        gt=0,
        le=60,
        description="Longest compiling one request's JSON schemas (response_format, tools) "
        "into a grammar may take; past it the request is a 400 (schema too complex).",
    )
    responses_store_max: int = Field(
        1000,
        ge=0,
        description="Most /v1/responses answers kept in memory for previous_response_id and "
        "GET /v1/responses/{id} (oldest out first; 0 keeps none). Lost on restart.",
    )
    responses_store_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Most bytes of stored /v1/responses answers and their conversations.",
    )
    shutdown_grace_seconds: float = Field(
        20, ge=0, description="Time in-flight requests get to finish on SIGTERM."
    )
    request_timeout_seconds: float = Field(
        600,
        gt=0,
        le=86400,
        description="Deadline of one request, end to end (waiting for a model included); "
        "past it the request ends with an error.",
    )
    send_timeout_seconds: float = Field(
        30,
        gt=0,
        le=3600,
        description="Longest a stream waits for its client to take the next bytes; past it "
        "(or past the request's deadline) the stream is abandoned and its connection closed.",
    )
    engine_load_timeout_seconds: float = Field(
        600, gt=0, description="Longest an engine process may take to load its model."
    )
    engine_stall_seconds: float = Field(
        30,
        gt=0,
        description="An engine process silent this long (no step, no heartbeat) is killed "
        "and replaced. One pipeline step must fit in it.",
    )

    @field_validator("preload_models", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "model_path",
        "cache_dir",
        "api_key_file",
        "fallback_device",
        "int4_device",
        "audio_device",
        "kv_cache_precision",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("registry_path", "model_path", "models_dir", "cache_dir", "api_key_file")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("api_key_file")
    @classmethod
    def _key_file_has_a_key(cls, value: Path | None) -> Path | None:
        # Fail closed: a key file that cannot be read, or holds no key, must not turn
        # authentication off.
        if value is not None:
            try:
                key = value.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror}") from None
            if not key:
                raise ValueError(f"{value} holds no key")
        return value

    @field_validator("log_level", "inference_precision", mode="before")
    @classmethod
    def _case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower() or "auto"

    def fallback_model_name(self) -> str | None:
        """The name /v1/models lists the fallback model under."""
        path = self.model_path
        if path is None:
            return None
        return path.stem if path.suffix == ".gguf" else path.name

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip()
        return None


# Only the HTTP process checks the key: its child processes (engines, the doctor) do without,
# so that no core dump or /proc/<pid>/environ of theirs holds it.
SECRET_ENV = frozenset({"OV_API_KEY", "OV_API_KEY_FILE"})


def child_environ() -> dict[str, str]:
    """This process's environment for a child process: without the secrets."""
    return {name: value for name, value in os.environ.items() if name not in SECRET_ENV}
