"""Wire models of the rest of the surface: embeddings, rerank, legacy completions, tokenize.

OpenAI's shapes for ``/v1/embeddings`` and ``/v1/completions``, the Cohere/Jina/vLLM shape for
``/v1/rerank`` (and its ``/rerank``, ``/v2/rerank`` aliases), vLLM's for ``/tokenize`` and
``/detokenize``. Requests accept unknown fields (LiteLLM forwards extras); what a model cannot
do (``dimensions``, more log-probability alternatives than the engine gives, ``suffix`` without
fill-in-the-middle tokens) is decided by the serving layer, which knows the model.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, StrictStr, field_validator, model_validator

from ov_llm_server.protocol import (
    MAX_TOKEN_ID,
    ChatMessage,
    Lenient,
    ModelName,
    RequestBody,
    SamplingRequest,
    TokenId,
)

# OpenAI's limits: 2048 inputs per embeddings request, up to 5 log-probability alternatives.
MAX_EMBEDDING_INPUTS = 2048
MAX_LOGPROBS = 5
MAX_RERANK_DOCUMENTS = 1000

TokenIds = Annotated[list[TokenId], Field(min_length=1)]


def _is_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_TOKEN_ID for i in value
        )
    )


def _check_inputs(value: Any, field: str, limit: int | None = None) -> Any:
    """One clear message for a malformed ``input``/``prompt`` instead of a union's four."""
    shape = (
        f"'{field}' must be a string, a list of strings, a list of token ids "
        f"(0 to {MAX_TOKEN_ID}) or a list of token-id lists"
    )
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise ValueError(shape if not isinstance(value, list) else f"'{field}' must not be empty")
    if limit is not None and len(value) > limit:
        raise ValueError(f"'{field}' has {len(value)} items, at most {limit} are allowed")
    if all(isinstance(item, str) for item in value) or _is_ids(value):
        return value
    if all(isinstance(item, list) for item in value):
        for index, item in enumerate(value):
            if not _is_ids(item):
                raise ValueError(
                    f"'{field}[{index}]' must be a non-empty list of token ids "
                    f"(0 to {MAX_TOKEN_ID})"
                )
        return value
    raise ValueError(shape)


# ---------------------------------------------------------------- /v1/embeddings


class EmbeddingRequest(RequestBody):
    model: ModelName
    # A string, strings, or token ids (one array or several) in the model's own vocabulary.
    input: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    # One of the model's own prompts (sentence-transformers' ``prompts``, e.g. "query"), as
    # Hugging Face TEI takes it; without it the model's default prompt, if any.
    prompt_name: str | None = None
    # Over-length inputs are refused unless truncation is asked for: Hugging Face TEI's
    # ``truncate``, or vLLM's ``truncate_prompt_tokens`` (-1: the model's maximum length).
    truncate: bool = False
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, value: Any) -> Any:
        return _check_inputs(value, "input", MAX_EMBEDDING_INPUTS)

    def texts(self) -> list[str] | None:
        """The inputs as strings, or None when they are token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return [str(item) for item in self.input]
        return None

    def token_ids(self) -> list[list[int]] | None:
        """The inputs as token-id arrays, or None when they are strings."""
        if isinstance(self.input, str) or not self.input:
            return None
        first = self.input[0]
        if isinstance(first, int):
            return [[int(i) for i in self.input if isinstance(i, int)]]
        if isinstance(first, list):
            return [list(ids) for ids in self.input if isinstance(ids, list)]
        return None

    def wants_truncation(self, max_length: int) -> bool:
        """True when the client asked for truncation at (or beyond) the model's limit.

        vLLM's ``truncate_prompt_tokens`` below the model's limit asks for a cut the embedding
        pipeline does not make; the serving layer refuses it with ``truncation_below``.
        """
        tokens = self.truncate_prompt_tokens
        return self.truncate or tokens == -1 or (tokens is not None and tokens >= max_length)

    def truncation_below(self, max_length: int) -> bool:
        tokens = self.truncate_prompt_tokens
        return tokens is not None and 0 <= tokens < max_length


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # base64: little-endian float32, as OpenAI sends it


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage

    @classmethod
    def build(
        cls,
        model: str,
        vectors: Sequence[Sequence[float]] | np.ndarray[Any, Any],
        prompt_tokens: int,
        encoding_format: Literal["float", "base64"] = "float",
    ) -> EmbeddingResponse:
        return cls(
            model=model,
            data=[
                EmbeddingData(index=i, embedding=encode_embedding(v, encoding_format))
                for i, v in enumerate(vectors)
            ],
            usage=EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
        )


def encode_embedding(
    vector: Sequence[float] | np.ndarray[Any, Any], encoding_format: Literal["float", "base64"]
) -> list[float] | str:
    array = np.asarray(vector, dtype="<f4")
    if encoding_format == "base64":
        return base64.b64encode(array.tobytes()).decode("ascii")
    values: list[float] = array.tolist()
    return values


# ---------------------------------------------------------------- /v1/rerank, /rerank, /v2/rerank


class RerankDocument(Lenient):
    text: str


class RerankRequest(RequestBody):
    model: ModelName
    query: str
    documents: list[str | RerankDocument] = Field(min_length=1, max_length=MAX_RERANK_DOCUMENTS)
    # None or 0 (vLLM's "all"): every document, ranked.
    top_n: int | None = Field(default=None, ge=0)
    return_documents: bool = True
    # Cohere v2: each document is cut to this many tokens; the model's own limit applies anyway.
    max_tokens_per_doc: int | None = Field(default=None, ge=1)

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResultDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankResultDocument | None = None


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage

    @classmethod
    def build(
        cls,
        *,
        response_id: str,
        model: str,
        request: RerankRequest,
        scores: Sequence[float],
        total_tokens: int,
    ) -> RerankResponse:
        """Results sorted by score, best first (ties in document order), cut to ``top_n``."""
        texts = request.texts()
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        if request.top_n:
            order = order[: request.top_n]
        results = [
            RerankResult(
                index=i,
                relevance_score=float(scores[i]),
                document=RerankResultDocument(text=texts[i]) if request.return_documents else None,
            )
            for i in order
        ]
        return cls(
            id=response_id,
            model=model,
            results=results,
            usage=RerankUsage(total_tokens=total_tokens),
        )


# ---------------------------------------------------------------- /v1/completions


class CompletionRequest(SamplingRequest):
    model: ModelName
    prompt: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1)]
    )
    suffix: str | None = None
    # OpenAI's default is 16; 0 with ``echo`` scores the prompt without generating.
    max_tokens: int | None = Field(default=16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    best_of: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: Any) -> Any:
        return _check_inputs(value, "prompt")

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.best_of not in (None, 1):
            raise ValueError("best_of must be 1")
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens must be at least 1 (0 only with echo)")
        if self.suffix is not None and self.echo:
            raise ValueError("echo cannot be combined with suffix")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def stops(self) -> list[str]:
        return list(self.stop or ())

    def prompts(self) -> list[str] | list[list[int]]:
        """One entry per prompt: strings, or token-id arrays. Each gets its own choice."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        first = self.prompt[0]
        if isinstance(first, str):
            return [str(p) for p in self.prompt]
        if isinstance(first, int):
            return [[int(i) for i in self.prompt if isinstance(i, int)]]
        return [list(ids) for ids in self.prompt if isinstance(ids, list)]


# ---------------------------------------------------------------- /tokenize, /detokenize (vLLM)


class TokenizeRequest(RequestBody):
    """vLLM's two forms in one model: ``prompt`` (completion) or ``messages`` (chat)."""

    model: ModelName | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    # vLLM's defaults: special tokens for a bare prompt; none for chat (the template has them).
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either 'prompt' or 'messages'")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' must not be empty")
        return self

    def special_tokens(self) -> bool:
        if self.add_special_tokens is not None:
            return self.add_special_tokens
        return self.prompt is not None


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int | None
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(RequestBody):
    model: ModelName | None = None
    tokens: list[TokenId]


class DetokenizeResponse(BaseModel):
    prompt: str
