"""What an embedding or rerank model needs besides its weights, read once from the model's files.

The converter reads a Hugging Face folder (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``, ``config_sentence_transformers.json``, ``config.json``) and
records the result in ``conversion.json``; the engine reads it back from there. One module for
both sides, as ``registry.py`` is, so the two can never disagree about a field.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

FEATURE_EXTRACTION = "feature-extraction"
TEXT_CLASSIFICATION = "text-classification"
IMAGE_TEXT_TO_TEXT = "image-text-to-text"
ENCODER_TASKS = (FEATURE_EXTRACTION, TEXT_CLASSIFICATION)
RECORD_KEY = "encoder"  # the section of conversion.json written by the converter

Pooling = Literal["cls", "mean", "last_token"]
# sentence-transformers' pooling modes that openvino_genai's TextEmbeddingPipeline can run.
_POOLING_MODES: dict[str, Pooling] = {"cls": "cls", "mean": "mean", "lasttoken": "last_token"}
_LEGACY_POOLING_KEYS: dict[str, str] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Modules after pooling that change the vector: serving without them would give other vectors.
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}
# A tokenizer_config.json without a limit says so with a huge number (int(1e30)).
_NO_LIMIT = 1_000_000
# Model inputs the pipelines make themselves; every other input must come from the tokenizer.
PIPELINE_INPUTS = {"position_ids", "beam_idx"}


class EncoderConfigError(Exception):
    """The model's files describe something this server cannot serve faithfully."""


class EmbeddingConfig(BaseModel):
    """How token states become one vector, and the prompts the model was trained with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pooling: Pooling = "mean"
    normalize: bool = True
    max_length: int = Field(gt=0)
    dimension: int | None = Field(default=None, gt=0)
    prompts: dict[str, str] = Field(default_factory=dict)
    default_prompt_name: str | None = None
    # Matryoshka truncation (OpenAI's ``dimensions``): None = not trained for it; [] = any
    # size up to ``dimension``; otherwise only the listed sizes.
    matryoshka_dimensions: list[int] | None = None
    # Where pooling and normalisation came from: the model's own files, or this server's
    # defaults for a plain transformers model converted with ``--task feature-extraction``.
    source: Literal["sentence-transformers", "default"] = "sentence-transformers"

    def default_prompt(self) -> str:
        if self.default_prompt_name is None:
            return ""
        return self.prompts.get(self.default_prompt_name, "")


class RerankConfig(BaseModel):
    """A cross-encoder: one (query, document) pair in, one relevance score out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_length: int = Field(gt=0)
    num_labels: Literal[1, 2] = 1
    # Applied to the logits by openvino_genai's TextRerankPipeline: sigmoid for one label,
    # softmax for two (the score is the second label's probability).
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    # The model reads segment ids. From a Hugging Face folder, a guess (it has a segment
    # table); the converter records what its IR takes (only what the tokenizer gives).
    token_type_ids: bool = False


# ---------------------------------------------------------------- reading a Hugging Face folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise EncoderConfigError(f"{path}: unreadable ({exc})") from exc


def _module_kind(entry: dict[str, Any]) -> str:
    # "sentence_transformers.models.Pooling", "sentence_transformers.base.modules.Normalize", ...
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def is_sentence_transformers(src: Path) -> bool:
    return (src / "modules.json").is_file()


def _pooling_mode(config: dict[str, Any], where: Path) -> tuple[Pooling, bool]:
    if "pooling_mode" in config:
        raw = config["pooling_mode"]
        modes = [raw] if isinstance(raw, str) else list(raw)
    else:
        modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)]
    if len(modes) != 1:
        raise EncoderConfigError(
            f"{where}: pooling {modes or 'none'}; only one of cls, mean, lasttoken is supported"
        )
    pooling = _POOLING_MODES.get(str(modes[0]))
    if pooling is None:
        raise EncoderConfigError(
            f"{where}: pooling mode {modes[0]!r} is not supported by openvino_genai "
            "(cls, mean, lasttoken are)"
        )
    return pooling, bool(config.get("include_prompt", True))


def _max_length(src: Path, hf_config: dict[str, Any], st_max: Any = None) -> int:
    """The sentence-transformers limit, else the tokenizer's, capped by the position table."""
    candidates: list[int] = []
    if isinstance(st_max, int) and st_max > 0:
        candidates.append(st_max)
    else:
        tokenizer_config = _read_json(src / "tokenizer_config.json") or {}
        limit = tokenizer_config.get("model_max_length")
        if isinstance(limit, int | float) and 0 < limit < _NO_LIMIT:
            candidates.append(int(limit))
    positions = hf_config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        candidates.append(positions)
    if not candidates:
        raise EncoderConfigError(f"{src}: no maximum input length in the model's files")
    return min(candidates)


def _matryoshka(hf_config: dict[str, Any]) -> list[int] | None:
    """vLLM's convention: ``matryoshka_dimensions`` (the trained sizes) or ``is_matryoshka``."""
    dims = hf_config.get("matryoshka_dimensions")
    if isinstance(dims, list) and dims and all(isinstance(d, int) and d > 0 for d in dims):
        return sorted(set(dims), reverse=True)
    if hf_config.get("is_matryoshka") is True:
        return []
    return None


def embedding_config_from_hf(src: Path, hf_config: dict[str, Any]) -> EmbeddingConfig:
    """Pooling, normalisation, prompts and limits from a Hugging Face folder."""
    hidden = hf_config.get("hidden_size")
    dimension = hidden if isinstance(hidden, int) and hidden > 0 else None
    matryoshka = _matryoshka(hf_config)
    modules = _read_json(src / "modules.json")
    if modules is None:
        log.warning(
            "%s has no sentence-transformers modules.json: using mean pooling and "
            "normalisation; check that this is how the model is meant to be used",
            src,
        )
        return EmbeddingConfig(
            max_length=_max_length(src, hf_config),
            dimension=dimension,
            matryoshka_dimensions=matryoshka,
            source="default",
        )
    if not isinstance(modules, list):
        raise EncoderConfigError(f"{src}/modules.json: expected a list of modules")
    kinds = [_module_kind(entry) for entry in modules if isinstance(entry, dict)]
    unsupported = [kind for kind in kinds if kind not in _SUPPORTED_MODULES]
    if unsupported:
        raise EncoderConfigError(
            f"{src}/modules.json: modules {', '.join(unsupported)} are not supported "
            "(Transformer, Pooling and Normalize are)"
        )
    pooling_entry = next((e for e in modules if _module_kind(e) == "Pooling"), None)
    if pooling_entry is None:
        raise EncoderConfigError(f"{src}/modules.json: no Pooling module")
    pooling_path = src / str(pooling_entry.get("path") or "") / "config.json"
    pooling_config = _read_json(pooling_path)
    if not isinstance(pooling_config, dict):
        raise EncoderConfigError(f"{pooling_path}: missing or not a JSON object")
    pooling, include_prompt = _pooling_mode(pooling_config, pooling_path)
    width = pooling_config.get("embedding_dimension") or pooling_config.get(
        "word_embedding_dimension"
    )
    if isinstance(width, int) and width > 0:
        dimension = width

    st_config = _read_json(src / "sentence_bert_config.json") or {}
    st_model = _read_json(src / "config_sentence_transformers.json") or {}
    prompts = {str(k): str(v) for k, v in (st_model.get("prompts") or {}).items()}
    default_prompt_name = st_model.get("default_prompt_name") or None
    if default_prompt_name is not None and default_prompt_name not in prompts:
        raise EncoderConfigError(
            f"{src}/config_sentence_transformers.json: default prompt "
            f"{default_prompt_name!r} is not among the prompts {sorted(prompts)}"
        )
    if not include_prompt and any(prompts.values()):
        # Pooling that skips the prompt's tokens cannot be expressed to TextEmbeddingPipeline.
        raise EncoderConfigError(
            f"{pooling_path}: include_prompt false with prompts is not supported"
        )
    return EmbeddingConfig(
        pooling=pooling,
        normalize="Normalize" in kinds,
        max_length=_max_length(src, hf_config, st_config.get("max_seq_length")),
        dimension=dimension,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        matryoshka_dimensions=matryoshka,
    )


def rerank_config_from_hf(src: Path, hf_config: dict[str, Any]) -> RerankConfig:
    labels = hf_config.get("num_labels")
    if labels is None:
        id2label = hf_config.get("id2label")
        labels = len(id2label) if isinstance(id2label, dict) and id2label else 2
    if labels not in (1, 2):
        raise EncoderConfigError(
            f"{src}/config.json: {labels} labels; a reranker scores with one (or two) labels"
        )
    return RerankConfig(
        max_length=_max_length(src, hf_config),
        num_labels=labels,
        activation="sigmoid" if labels == 1 else "softmax",
        token_type_ids=int(hf_config.get("type_vocab_size") or 0) > 1,
    )


def encoder_config_from_hf(src: Path, task: str, hf_config: dict[str, Any]) -> dict[str, Any]:
    """The ``encoder`` section of conversion.json for ``task``."""
    config: EmbeddingConfig | RerankConfig
    if task == FEATURE_EXTRACTION:
        config = embedding_config_from_hf(src, hf_config)
    elif task == TEXT_CLASSIFICATION:
        config = rerank_config_from_hf(src, hf_config)
    else:
        raise EncoderConfigError(f"{task!r} is not an encoder task")
    return config.model_dump(mode="json")


def detect_task(src: Path, hf_config: dict[str, Any], default: str) -> str:
    """A sequence classifier is a reranker; a sentence-transformers folder is an embedder; a
    vision-language model is ``image-text-to-text``."""
    architectures = hf_config.get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return TEXT_CLASSIFICATION
    if is_sentence_transformers(src):
        return FEATURE_EXTRACTION
    # A vision tower beside the language model (LLaVA, Qwen2-VL, ...): a chat model with eyes.
    if "vision_config" in hf_config and any(
        str(a).endswith("ForConditionalGeneration") for a in architectures
    ):
        return IMAGE_TEXT_TO_TEXT
    return default


# ---------------------------------------------------------------- reading a converted folder


def _recorded(path: Path) -> dict[str, Any] | None:
    record = _read_json(path / "conversion.json")
    section = record.get(RECORD_KEY) if isinstance(record, dict) else None
    return section if isinstance(section, dict) else None


def load_embedding_config(path: Path) -> EmbeddingConfig:
    """What the converter recorded; a folder converted elsewhere is read like a source folder."""
    recorded = _recorded(path)
    try:
        if recorded is not None:
            return EmbeddingConfig.model_validate(recorded)
    except ValidationError as exc:
        raise EncoderConfigError(f"{path}/conversion.json: invalid {RECORD_KEY}: {exc}") from exc
    return embedding_config_from_hf(path, _read_json(path / "config.json") or {})


def load_rerank_config(path: Path) -> RerankConfig:
    recorded = _recorded(path)
    try:
        if recorded is not None:
            return RerankConfig.model_validate(recorded)
    except ValidationError as exc:
        raise EncoderConfigError(f"{path}/conversion.json: invalid {RECORD_KEY}: {exc}") from exc
    return rerank_config_from_hf(path, _read_json(path / "config.json") or {})


def model_inputs(folder: Path) -> set[str]:
    import openvino as ov

    model = ov.Core().read_model(folder / "openvino_model.xml")
    return {name for port in model.inputs for name in port.get_names()}


def tokenizer_gaps(folder: Path) -> list[str]:
    """Inputs of the model IR that its tokenizer IR does not produce (empty when it can run).

    openvino_genai's encoder pipelines feed the model exactly the tokenizer's outputs; an input
    left over (typically ``token_type_ids``) fails inside the CPU plugin with a shape mismatch.
    """
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer ops read_model needs)

    tokenizer = ov.Core().read_model(folder / "openvino_tokenizer.xml")
    produced = {name for port in tokenizer.outputs for name in port.get_names()}
    return sorted(model_inputs(folder) - produced - PIPELINE_INPUTS)
