"""Embedding and rerank models as the engine process runs them: openvino_genai only.

No HTTP, no asyncio: the engine's loop calls these synchronously. Everything the models need
besides their IR (pooling, normalisation, prompts, limits) comes from ``encoder_config``.

Embeddings are batch-friendly, so that one model call serves many requests: per request,
``inputs`` (prompt, token ids to text, checks); per batch, one ``run`` (the vectors and
token counts of every input of every waiting request); per request again, ``fit`` (an
over-length input refuses its request unless it asked for truncation) and ``finish``
(Matryoshka truncation). ``embed`` does it all for one request.

The token counts (``usage``, the length checks) cost a tokenization besides the pipeline's
own, which TextEmbeddingPipeline does not report. A tokenizer call costs about 1.5 ms
however short its input, as much as a whole model call of a tiny embedder: so there is one
per batch, not one per request, and it runs while the pipeline works (its asynchronous
call), not before it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino_genai as og

from ov_llm_server.encoder_config import (
    EmbeddingConfig,
    EncoderConfigError,
    RerankConfig,
    load_embedding_config,
    load_rerank_config,
    tokenizer_gaps,
)

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
# Inputs per model call: larger batches pad more and hold more activations at once.
DEFAULT_MAX_BATCH = 32
_POOLING = {
    "cls": og.TextEmbeddingPipeline.PoolingType.CLS,
    "mean": og.TextEmbeddingPipeline.PoolingType.MEAN,
    "last_token": og.TextEmbeddingPipeline.PoolingType.LAST_TOKEN,
}


class EncoderInputError(ValueError):
    """A request the model cannot serve as asked: the API answers 400 with this message."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class InputTooLong(EncoderInputError):
    def __init__(self, index: int, tokens: int, max_length: int) -> None:
        super().__init__(
            f"input {index} has {tokens} tokens, more than this model's maximum of {max_length}; "
            "shorten it or ask for truncation",
            param="input",
        )
        self.index = index
        self.tokens = tokens
        self.max_length = max_length


def _chunks(count: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def _token_counts(encoded: Any) -> list[int]:
    return [int(n) for n in np.asarray(encoded.attention_mask.data).sum(axis=1)]


def _vocab_size(path: Path, tokenizer: Any) -> int:
    """The embedding table's size: ids at or above it would index past it."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        size = config.get("vocab_size")
        if isinstance(size, int) and size > 0:
            return size
    except (OSError, ValueError):
        pass
    return len(tokenizer.get_vocab_vector())


def _check_tokenizer(path: Path) -> None:
    gaps = tokenizer_gaps(path)
    if gaps:
        raise EncoderConfigError(
            f"{path}: the model takes {', '.join(gaps)} but its tokenizer does not produce them "
            "(openvino_genai would fail with a shape mismatch); convert it with ov-convert-model"
        )


@dataclass(frozen=True)
class Embeddings:
    vectors: Vectors  # float32, one row per input
    token_counts: list[int]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


class EmbeddingModel:
    """A sentence embedder over ``openvino_genai.TextEmbeddingPipeline``."""

    def __init__(
        self,
        path: Path,
        device: str,
        config: EmbeddingConfig | None = None,
        *,
        properties: Mapping[str, Any] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.path = path
        self.device = device
        self.config = config or load_embedding_config(path)
        self.max_batch = max_batch
        _check_tokenizer(path)
        pipe_config = og.TextEmbeddingPipeline.Config()
        pipe_config.pooling_type = _POOLING[self.config.pooling]
        pipe_config.normalize = self.config.normalize
        # With max_length the pipeline truncates; inputs over it are refused in ``fit``
        # unless the request asked for truncation. Prompts are prepended in ``inputs``: the
        # pipeline's two instruction slots are fixed at construction, a request picks its own.
        pipe_config.max_length = self.config.max_length
        self._pipe = og.TextEmbeddingPipeline(str(path), device, pipe_config, **(properties or {}))
        # The pipeline does not expose its tokenizer; this one counts the tokens it will see.
        self.tokenizer = og.Tokenizer(str(path))
        self.vocab_size = _vocab_size(path, self.tokenizer)
        self.dimension = len(self._pipe.embed_documents(["."])[0])

    @property
    def max_length(self) -> int:
        return self.config.max_length

    # ------------------------------------------------------------ per request, before the batch

    def check_dimensions(self, dimensions: int | None) -> None:
        """Refuse ``dimensions`` the model was not trained to be truncated to."""
        if dimensions is None or dimensions == self.dimension:
            return
        allowed = self.config.matryoshka_dimensions
        if allowed is None:
            raise EncoderInputError(
                f"this model does not support 'dimensions' (its vectors have {self.dimension}; "
                "it was not trained for truncation)",
                param="dimensions",
            )
        if allowed and dimensions not in allowed:
            sizes = ", ".join(str(d) for d in allowed)
            raise EncoderInputError(
                f"'dimensions' must be one of {sizes} for this model", param="dimensions"
            )
        if not 0 < dimensions <= self.dimension:
            raise EncoderInputError(
                f"'dimensions' must be between 1 and {self.dimension}", param="dimensions"
            )

    def prompt(self, prompt_name: str | None) -> str:
        if prompt_name is None:
            return self.config.default_prompt()
        if prompt_name not in self.config.prompts:
            known = ", ".join(sorted(self.config.prompts)) or "none"
            raise EncoderInputError(
                f"unknown prompt {prompt_name!r} (this model's prompts: {known})", param="input"
            )
        return self.config.prompts[prompt_name]

    def inputs(
        self,
        texts: Sequence[str] | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
        prompt_name: str | None = None,
    ) -> list[str]:
        """What the model embeds for one request: prompted texts, or token ids as text.

        TextEmbeddingPipeline takes text only, so token ids (OpenAI's ``input`` as arrays of
        ints, in this model's vocabulary) are decoded, to be encoded again. For ids that came
        from this model's tokenizer that gives the same tokens back (special tokens are
        dropped and added again where the model wants them); an unusual split of a word is
        replaced by the tokenizer's own. No prompt is added to them: the caller tokenized
        exactly what it wants embedded.
        """
        if token_ids is None:
            prefix = self.prompt(prompt_name)
            return [prefix + text for text in texts or ()]
        for index, ids in enumerate(token_ids):
            if not ids:
                raise EncoderInputError(f"input {index} is an empty token array", param="input")
            bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
            if bad is not None:
                raise EncoderInputError(
                    f"input {index} has token id {bad}, outside this model's vocabulary "
                    f"(0 to {self.vocab_size - 1})",
                    param="input",
                )
        decoded = self.tokenizer.decode([list(ids) for ids in token_ids], skip_special_tokens=True)
        return [str(text) for text in decoded]

    # ------------------------------------------------------------ the batch

    def fit(self, counts: Sequence[int], truncate: bool, first: int = 0) -> list[int]:
        """One request's token counts (of its inputs from ``first`` on) as the model reads
        them: over-length inputs are refused (:class:`InputTooLong`), or cut to the model's
        maximum when truncation was asked for."""
        for index, count in enumerate(counts, start=first):
            if count > self.max_length and not truncate:
                raise InputTooLong(index, count, self.max_length)
        return [min(count, self.max_length) for count in counts]

    def run(self, texts: Sequence[str]) -> tuple[Vectors, list[int]]:
        """One row per text, and its tokens (special tokens included, before truncation):
        the batched model call, shared by every waiting request."""
        rows: list[Vectors] = []
        counts: list[int] = []
        for part in _chunks(len(texts), self.max_batch):
            chunk = list(texts[part])
            self._pipe.start_embed_documents_async(chunk)
            counts += _token_counts(self.tokenizer.encode(chunk))
            rows.append(np.asarray(self._pipe.wait_embed_documents(), dtype=np.float32))
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32), []
        return np.concatenate(rows), counts

    # ------------------------------------------------------------ per request, after the batch

    def finish(self, vectors: Vectors, dimensions: int | None = None) -> Vectors:
        """Matryoshka truncation: the first ``dimensions`` values, normalised again if the
        model normalises (the direction of the truncated vector is what was trained)."""
        if dimensions is None or dimensions >= vectors.shape[1]:
            return vectors
        cut = np.ascontiguousarray(vectors[:, :dimensions])
        if self.config.normalize:
            norms = np.linalg.norm(cut, axis=1, keepdims=True)
            cut = cut / np.maximum(norms, np.finfo(np.float32).tiny)
        return cut.astype(np.float32, copy=False)

    def embed(
        self,
        texts: Sequence[str] | None = None,
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
        prompt_name: str | None = None,
        truncate: bool = False,
        dimensions: int | None = None,
    ) -> Embeddings:
        """One request, start to end: what the engine does for each request of a batch."""
        self.check_dimensions(dimensions)
        vectors, counts = self.run(self.inputs(texts, token_ids, prompt_name))
        return Embeddings(self.finish(vectors, dimensions), self.fit(counts, truncate))


@dataclass(frozen=True)
class RerankScores:
    scores: list[float]  # one per document, in the documents' order
    token_count: int


class RerankModel:
    """A cross-encoder over ``openvino_genai.TextRerankPipeline``.

    The pipeline feeds the model exactly what the tokenizer IR produces. ov-convert-model
    makes the two agree with transformers: a BERT whose Hugging Face tokenizer gives
    ``token_type_ids`` (the ms-marco MiniLM family) gets a pair tokenizer that gives BERT's
    segment ids, and one whose tokenizer does not gets an IR with transformers' all-zero segment
    ids built in. A folder converted elsewhere may take an input its tokenizer does not produce
    (optimum exports BERT's ``token_type_ids`` whatever the tokenizer gives), on which the CPU
    plugin fails in the embeddings' Add: this class refuses it (``_check_tokenizer``) with a
    message instead. The pipeline gives the IR's logits through sigmoid (one label) or softmax
    (two).
    """

    def __init__(
        self,
        path: Path,
        device: str,
        config: RerankConfig | None = None,
        *,
        properties: Mapping[str, Any] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.path = path
        self.device = device
        self.config = config or load_rerank_config(path)
        self.max_batch = max_batch
        _check_tokenizer(path)
        pipe_config = og.TextRerankPipeline.Config()
        # Every score of a chunk comes back (sorted); the caller sorts and cuts to its top_n.
        pipe_config.top_n = max_batch
        # Pairs longer than this are truncated by the pipeline (Cohere's and TEI's behaviour).
        pipe_config.max_length = self.config.max_length
        self._pipe = og.TextRerankPipeline(str(path), device, pipe_config, **(properties or {}))
        # The pipeline takes pairs the same way when the tokenizer IR has one text input.
        self.tokenizer = og.Tokenizer(str(path), add_second_input=True)

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def count_tokens(self, query: str, documents: Sequence[str]) -> int:
        """Tokens the model reads: every (query, document) pair after truncation."""
        total = 0
        for part in _chunks(len(documents), self.max_batch):
            encoded = self.tokenizer.encode(
                [query], list(documents[part]), truncation=True, max_length=self.max_length
            )
            total += sum(_token_counts(encoded))
        return total

    def score(self, query: str, documents: Sequence[str]) -> RerankScores:
        scores = [0.0] * len(documents)
        for part in _chunks(len(documents), self.max_batch):
            for index, value in self._pipe.rerank(query, list(documents[part])):
                scores[part.start + index] = float(value)
        return RerankScores(scores, self.count_tokens(query, documents) if documents else 0)
