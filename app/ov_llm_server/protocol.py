"""Pydantic models of the OpenAI wire format this server speaks."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------- requests

# A model name reaches logs and error messages: no control characters, a sane length.
ModelName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


# Token ids: no vocabulary reaches 2^31 (GenAI and the tokenizers hold ids as int32); within
# that range each model's engine checks its own vocabulary.
MAX_TOKEN_ID = 2**31 - 1
TokenId = Annotated[StrictInt, Field(ge=0, le=MAX_TOKEN_ID)]
# What GenAI's rng_seed (a size_t) takes.
MAX_SEED = 2**64 - 1
MAX_STOPS = 4
# What an engine message (msgpack) can carry at all: a larger integer anywhere in the body
# (a tool schema's bound, an unknown field) could not be sent to the engine.
_INT_RANGE = (-(2**63), 2**64 - 1)


class Lenient(BaseModel):
    # LiteLLM and SDKs send fields we do not use; they must not fail the request.
    model_config = ConfigDict(extra="allow")


class RequestBody(Lenient):
    """A whole request body. JSON lets a client send what no engine message can carry: a lone
    surrogate (``"\\ud800"``, which cannot be encoded as UTF-8) in any string or key, or an
    integer beyond 64 bits. Both are refused here, naming where they are, before any field is
    read."""

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        where = _unencodable(data)
        if where is not None:
            loc, problem = where
            detail = InitErrorDetails(
                type=PydanticCustomError("unencodable", problem), loc=loc, input=None
            )
            raise ValidationError.from_exception_data(cls.__name__, [detail])
        return data


# A path into a JSON value, as a chain of (parent, key): every node costs O(1), however deep.
_Path = tuple[Any, str | int] | None


def _unencodable(data: Any) -> tuple[tuple[str | int, ...], str] | None:
    """Where in a parsed JSON value the first unencodable string or integer is, and what is
    wrong with it; None when all of it can be sent. Iterative (JSON nests deeper than Python
    recursion allows), and only containers are pushed: a body of 10^5 numbers takes
    milliseconds."""
    if not isinstance(data, dict | list):
        return None  # not a body any request model takes: its own validation refuses it
    stack: list[tuple[_Path, Any]] = [(None, data)]
    while stack:
        path, container = stack.pop()
        items: Any = enumerate(container)
        if isinstance(container, dict):
            for key in container:
                if not _utf8(key):
                    return _loc((path, _printable(key))), f"a key {_SURROGATE}"
            items = container.items()
        for key, item in items:
            kind = type(item)
            if kind is str:
                if not _utf8(item):
                    return _loc((path, key)), f"text {_SURROGATE}"
            elif kind is int:
                if not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
                    problem = f"integer out of range ({_INT_RANGE[0]} to {_INT_RANGE[1]})"
                    return _loc((path, key)), problem
            elif kind is dict or kind is list:
                stack.append(((path, key), item))
    return None


_SURROGATE = "with a lone UTF-16 surrogate (not a character) is not accepted"


def _loc(path: _Path) -> tuple[str | int, ...]:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    return tuple(reversed(keys))


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """``text`` with lone surrogates written as escapes, so that an error can name it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ContentPart(Lenient):
    type: str
    text: str | None = None
    # An "image_url" part: {"url": "data:image/png;base64,...", "detail": ...}.
    image_url: str | dict[str, Any] | None = None


class FunctionCall(Lenient):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(Lenient):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    def text(self) -> str:
        """Content as one string; non-text parts are refused before this is called."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class FunctionDefinition(Lenient):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(Lenient):
    name: str


class NamedToolChoice(Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaSpec(Lenient):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(Lenient):
    include_usage: bool = False


# Longest stop sequence: real ones are a few characters ("\n\nUser:", "</s>"); the engine
# holds back up to this much of the answer while a stop may still be starting.
MAX_STOP_CHARS = 256


class SamplingRequest(RequestBody):
    """What chat and text completions share: sampling, stops and streaming."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1, le=MAX_TOKEN_ID)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0)
    # vLLM extensions that benchmarks use to fix the output length.
    min_tokens: int | None = Field(default=None, ge=0)
    ignore_eos: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        """``stop`` as a list without empty strings (None if none is left)."""
        stops = [s for s in ([value] if isinstance(value, str) else value or ()) if s]
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences are supported")
        if any(len(stop) > MAX_STOP_CHARS for stop in stops):
            raise ValueError(f"a stop sequence may have at most {MAX_STOP_CHARS} characters")
        return stops or None


class ChatCompletionRequest(SamplingRequest):
    model: ModelName
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    # The chosen tokens' log probabilities; alternatives (top_logprobs > 0) are refused.
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# ---------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class TokenLogprob(BaseModel):
    """One token of ``choices[].logprobs.content``: its text, UTF-8 bytes and log probability."""

    token: str
    logprob: float
    bytes: list[int]
    # Alternatives: none, GenAI computes the chosen token's probability only.
    top_logprobs: list[Any] = Field(default_factory=list)

    @classmethod
    def of(cls, token: str, logprob: float) -> TokenLogprob:
        return cls(token=token, logprob=logprob, bytes=list(token.encode("utf-8")))


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None
    # vLLM's field: the stop sequence that ended the answer (left out when none did).
    stop_reason: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


ModelMode = Literal[
    "chat", "completion", "embedding", "rerank", "audio_speech", "audio_transcription"
]
# "tools": the chat template renders tools; "reasoning": it thinks (<think>);
# "response_schema": response_format json_schema is enforced by a grammar; "vision": it reads
# image_url content parts.
Capability = Literal["tools", "reasoning", "response_schema", "vision"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ov-llm-server"
    task: str | None = None
    weight_format: str | None = None
    loaded: bool = False
    # Where the model runs (loaded) or will run, and why (placement.py).
    device: str | None = None
    device_reason: str | None = None
    # The precision it computes in once loaded (f32, bf16, f16: as the device resolved the
    # hint), and the hint it asks for (placement.choose_precision; None: the device's default).
    precision: str | None = None
    precision_hint: str | None = None
    source: Literal["registry", "fallback"] = "registry"
    # What the model does, read from its files (capabilities.py).
    mode: ModelMode | None = None
    context_length: int | None = None
    max_model_len: int | None = None
    max_output_tokens: int | None = None
    capabilities: list[Capability] = Field(default_factory=list)
    dimension: int | None = None  # an embedding model's vector size


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
