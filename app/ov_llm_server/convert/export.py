"""One model folder in, one OpenVINO IR folder out: the only code that calls optimum-intel.

optimum-intel, nncf, transformers and torch are the optional ``convert`` extra and take seconds
to import, so they are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ov_llm_server.encoder_config import (
    ENCODER_TASKS,
    IMAGE_TEXT_TO_TEXT,
    TEXT_CLASSIFICATION,
    EncoderConfigError,
    detect_task,
    encoder_config_from_hf,
    model_inputs,
    tokenizer_gaps,
)
from ov_llm_server.registry import SPEECH_RECOGNITION, SPEECH_TASK, SPEECH_TASKS
from ov_llm_server.textutil import one_line

from . import speech

log = logging.getLogger(__name__)

WeightFormat = Literal["int8", "fp16", "int4"]
WEIGHT_FORMATS: tuple[WeightFormat, ...] = ("int8", "fp16", "int4")
DEFAULT_TASK = "text-generation-with-past"
DEFAULT_GROUP_SIZE = 128
# nncf refuses int4 groups smaller than this on its "adjust" path; below it, quantise per channel.
MIN_GROUP_SIZE = 32

MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")
TOKENIZER_FILES = (
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
)
REQUIRED_FILES = MODEL_FILES + TOKENIZER_FILES
# A vision-language model is three IRs: its vision tower, its text embeddings, its language model.
VLM_MODEL_FILES = tuple(
    f"openvino_{part}_model.{ext}"
    for part in ("language", "text_embeddings", "vision_embeddings")
    for ext in ("xml", "bin")
)
# Whisper: an encoder and a decoder with its past (what WhisperPipeline loads).
WHISPER_FILES = (
    "openvino_encoder_model.xml",
    "openvino_encoder_model.bin",
    "openvino_decoder_model.xml",
    "openvino_decoder_model.bin",
)


class ConversionError(Exception):
    """A conversion failed; the message is one line meant for the user."""


class MissingExtraError(ConversionError):
    """The ``convert`` extra (optimum-intel and friends) is not installed."""


@dataclass(frozen=True)
class ExportOptions:
    weight_format: WeightFormat = "int8"
    task: str | None = None  # None: detected from the model's files (see resolve_task)
    # int4 only: requested group size (adapted to the model's shapes), 4-bit share, symmetry.
    group_size: int = DEFAULT_GROUP_SIZE
    ratio: float = 1.0
    sym: bool = False
    trust_remote_code: bool = False


def read_hf_config(src: Path) -> dict[str, Any]:
    try:
        data = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{src}: no config.json, not a Hugging Face model folder") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{src}/config.json: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"{src}/config.json: expected a JSON object")
    # Multimodal and some newer configs nest the language model's settings.
    text_config = data.get("text_config")
    return {**data, **text_config} if isinstance(text_config, dict) else data


def resolve_task(src: Path, options: ExportOptions) -> ExportOptions:
    """``--task`` if given, else what the model's files say it is (a chat model by default)."""
    if options.task:
        return options
    hf_config = read_hf_config(src)
    if speech.is_speech_model(hf_config):
        return replace(options, task=SPEECH_TASK)
    if hf_config.get("model_type") == "whisper":
        return replace(options, task=SPEECH_RECOGNITION)
    return replace(options, task=detect_task(src, hf_config, DEFAULT_TASK))


def encoder_record(src: Path, task: str) -> dict[str, Any] | None:
    """Pooling, prompts, limits (embedders) or labels (rerankers), for conversion.json.

    Read before the export, so a model this server cannot serve faithfully fails in seconds.
    """
    if task not in ENCODER_TASKS:
        return None
    try:
        return encoder_config_from_hf(src, task, read_hf_config(src))
    except EncoderConfigError as exc:
        raise ConversionError(str(exc)) from exc


def _input_widths(hf_config: dict[str, Any]) -> list[int]:
    """Input widths of the big matmuls: int4 groups must divide every one of them."""
    widths = []
    for keys in (("hidden_size", "n_embd", "d_model"), ("intermediate_size", "ffn_dim", "n_inner")):
        for key in keys:
            value = hf_config.get(key)
            if isinstance(value, int) and value > 0:
                widths.append(value)
                break
    return widths


def adapt_group_size(requested: int, hf_config: dict[str, Any]) -> int:
    """The largest group size <= ``requested`` that divides the model's layer widths.

    int4's default of 128 fails on models whose hidden or MLP width is not a multiple of it.
    Powers of two are tried downwards; -1 (one group per channel) is the last resort.
    """
    if requested <= 0:
        return -1
    widths = _input_widths(hf_config)
    if not widths:
        return requested
    common = math.gcd(*widths)
    if common % requested == 0:
        return requested
    size = 1 << (requested.bit_length() - 1)
    while size >= MIN_GROUP_SIZE:
        if common % size == 0:
            return size
        size //= 2
    return -1


def quantization_settings(options: ExportOptions, hf_config: dict[str, Any]) -> dict[str, Any]:
    """The settings actually used, as recorded in conversion.json and passed to nncf."""
    if options.weight_format == "fp16":
        return {"dtype": "fp16"}
    if options.weight_format == "int8":
        return {"bits": 8, "sym": options.sym, "group_size": -1, "ratio": 1.0}
    group_size = adapt_group_size(options.group_size, hf_config)
    return {
        "bits": 4,
        "sym": options.sym,
        "group_size": group_size,
        "requested_group_size": options.group_size,
        "ratio": options.ratio,
        # Layers the chosen size still does not fit get the largest size that does.
        "group_size_fallback": "adjust",
    }


def _import_optimum() -> Any:
    try:
        from optimum.exporters.openvino import __main__ as optimum_export
    except ImportError as exc:
        raise MissingExtraError(
            f"conversion needs the 'convert' extra (pip install 'ov-llm-server[convert]'): {exc}"
        ) from exc
    return optimum_export


def export_model(src: Path, out: Path, options: ExportOptions) -> dict[str, Any]:
    """Convert the Hugging Face folder ``src`` into IR (model, tokenizer, detokenizer) in ``out``.

    ``out`` should be a fresh folder; callers rename it into place once this returns.
    Returns the quantisation settings used.
    """
    if options.weight_format not in WEIGHT_FORMATS:
        raise ConversionError(
            f"unknown weight format {options.weight_format!r} (one of {', '.join(WEIGHT_FORMATS)})"
        )
    options = resolve_task(src, options)
    task = str(options.task)
    hf_config = read_hf_config(src)
    settings = quantization_settings(options, hf_config)
    # A SpeechT5 without its vocoder fails here, in milliseconds, not after the imports.
    model_kwargs = _speech_vocoder(src) if task == SPEECH_TASK else None
    optimum_export = _import_optimum()
    from optimum.intel.openvino.configuration import OVConfig, OVWeightQuantizationConfig

    if options.weight_format == "int4" and settings["group_size"] != options.group_size:
        log.info(
            "int4 group size %d does not divide the layer widths %s; using %d",
            options.group_size,
            _input_widths(hf_config),
            settings["group_size"],
        )
    if options.weight_format == "fp16":
        ov_config = OVConfig(dtype="fp16")
        wq_config = None
    else:
        wq_config = OVWeightQuantizationConfig(
            **{k: v for k, v in settings.items() if k != "requested_group_size"}
        )
        ov_config = OVConfig(quantization_config=wq_config)

    started = time.monotonic()
    log.info("exporting %s (task %s) with optimum-intel", src, task)
    try:
        with warnings.catch_warnings():
            # torch.jit tracing warns about every shape-dependent branch; expected here.
            warnings.filterwarnings("ignore", message=".*[Tt]race.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            _run_optimum(optimum_export, src, out, options, ov_config, wq_config, model_kwargs)
            if task == SPEECH_TASK:
                speech.copy_extras(src, out)
            if task in ENCODER_TASKS:
                _match_transformers_inputs(src, out, task, options.trust_remote_code)
            if task == IMAGE_TEXT_TO_TEXT:
                write_image_processor_config(out)
    except ConversionError:
        raise
    except ImportError as exc:  # e.g. nncf missing: optimum imports it only to quantise
        raise MissingExtraError(
            f"conversion needs the 'convert' extra (pip install 'ov-llm-server[convert]'): {exc}"
        ) from exc
    except Exception as exc:
        raise ConversionError(
            f"optimum-intel export failed: {type(exc).__name__}: {one_line(exc)}"
        ) from exc
    log.info("exported in %.1f s", time.monotonic() - started)
    check_ir_folder(out, task)
    return settings


def export_gguf(gguf_file: Path, out: Path) -> dict[str, Any]:
    """Convert a GGUF file into IR in ``out`` with openvino_genai's own GGUF reader.

    genai saves the IR next to the file it loaded, so it loads a link placed in ``out``.
    The GGUF's quantised weights are kept as they are; there is nothing to choose.
    """
    import openvino_genai as og

    link = out / gguf_file.name
    out.mkdir(parents=True, exist_ok=True)
    link.symlink_to(gguf_file.resolve())
    started = time.monotonic()
    log.info("reading %s with openvino_genai and saving it as IR", gguf_file)
    try:
        og.LLMPipeline(str(link), "CPU", enable_save_ov_model=True)
    except Exception as exc:
        raise ConversionError(
            f"openvino_genai cannot convert {gguf_file.name}: {one_line(exc)}"
        ) from exc
    finally:
        link.unlink(missing_ok=True)
    log.info("converted in %.1f s", time.monotonic() - started)
    check_ir_folder(out)
    return {"source_format": "gguf"}


def _run_optimum(
    optimum_export: Any,
    src: Path,
    out: Path,
    options: ExportOptions,
    ov_config: Any,
    wq_config: Any,
    model_kwargs: dict[str, Any] | None = None,
) -> None:
    """What ``optimum-cli export openvino`` runs: export, then compress the weights."""
    optimum_export.main_export(
        model_name_or_path=str(src),
        output=out,
        task=options.task,
        ov_config=ov_config,
        convert_tokenizer=True,
        trust_remote_code=options.trust_remote_code,
        library_name="transformers",
        model_kwargs=model_kwargs,
    )
    if wq_config is None:
        return
    log.info("compressing weights to %s with nncf", options.weight_format)
    if not log.isEnabledFor(logging.INFO):
        import nncf  # sets its own logger to INFO when imported, so quieten it afterwards

        nncf.set_log_level(logging.WARNING)
    optimum_export._main_quantize(
        model_name_or_path=str(src),
        task=options.task,
        library_name="transformers",
        quantization_config=wq_config,
        output=out,
        cache_dir=None,
        trust_remote_code=options.trust_remote_code,
    )


def _speech_vocoder(src: Path) -> dict[str, Any]:
    try:
        return speech.vocoder_kwargs(src)
    except speech.SpeechSourceError as exc:
        raise ConversionError(str(exc)) from exc


def _match_transformers_inputs(src: Path, out: Path, task: str, trust_remote_code: bool) -> None:
    """Make the encoder IR take what the Hugging Face tokenizer gives it, and convert a
    tokenizer IR that gives exactly that.

    optimum exports a BERT with a ``token_type_ids`` input whatever its tokenizer does. A
    tokenizer that does not list them in ``model_input_names`` leaves them out, so transformers
    (and sentence-transformers) run the model on its own all-zero segment ids: the IR then gets
    those zeros built in, instead of an input transformers never feeds (left unset it fails
    in the embeddings' Add; fed with BERT's pair segment ids it gives other scores). The
    tokenizer IR's outputs are the model's inputs, in the Hugging Face tokenizer's own order,
    and a reranker's takes (query, document) pairs natively.
    """
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(src), trust_remote_code=trust_remote_code)
    emitted = list(tokenizer.model_input_names)
    if "token_type_ids" in model_inputs(out) and "token_type_ids" not in emitted:
        _build_in_zero_segment_ids(out)
    inputs = model_inputs(out)
    tokenizer.model_input_names = [name for name in emitted if name in inputs]
    converted = convert_tokenizer(
        tokenizer,
        with_detokenizer=True,
        number_of_inputs=2 if task == TEXT_CLASSIFICATION else 1,
    )
    ov.save_model(converted[0], out / "openvino_tokenizer.xml")
    ov.save_model(converted[1], out / "openvino_detokenizer.xml")


def _build_in_zero_segment_ids(out: Path) -> None:
    """Replace the model IR's ``token_type_ids`` input by zeros shaped like ``input_ids``."""
    import openvino as ov
    import openvino.opset15 as ops

    model = ov.Core().read_model(out / "openvino_model.xml")
    by_name = {n: param for param in model.get_parameters() for n in param.output(0).get_names()}
    segments, ids = by_name["token_type_ids"], by_name["input_ids"]
    zero = ops.constant(0, segments.get_element_type())
    segments.output(0).replace(ops.broadcast(zero, ops.shape_of(ids)).output(0))
    model.remove_parameter(segments)
    model.validate_nodes_and_infer_types()
    # Written beside and renamed over: the weights just read are mapped from the old .bin.
    # The weights keep their format (save_model would halve f32 constants by default).
    ov.save_model(model, out / "openvino_model.segments.xml", compress_to_fp16=False)
    for suffix in (".bin", ".xml"):
        (out / f"openvino_model.segments{suffix}").replace(out / f"openvino_model{suffix}")


def served_encoder_record(out: Path, task: str, encoder: dict[str, Any]) -> dict[str, Any]:
    """The ``encoder`` section as the exported IR serves it: a reranker reads segment ids only
    when its tokenizer gives them (``_match_transformers_inputs``)."""
    if task != TEXT_CLASSIFICATION:
        return encoder
    return {**encoder, "token_type_ids": "token_type_ids" in model_inputs(out)}


def write_image_processor_config(out: Path) -> None:
    """GenAI reads a VLM's image preprocessing (mean, std, crop size) from
    ``preprocessor_config.json``; transformers 5 saves it inside ``processor_config.json``
    instead, and without the file GenAI silently preprocesses with its own defaults (the
    answers then differ from the model's)."""
    target = out / "preprocessor_config.json"
    if target.is_file():
        return
    try:
        processor = json.loads((out / "processor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    image_processor = processor.get("image_processor") if isinstance(processor, dict) else None
    if isinstance(image_processor, dict):
        target.write_text(json.dumps(image_processor, indent=2), encoding="utf-8")


def missing_files(folder: Path, task: str = DEFAULT_TASK) -> list[str]:
    if task == SPEECH_TASK:
        required = speech.IR_FILES
    elif task in SPEECH_TASKS:
        required = WHISPER_FILES + TOKENIZER_FILES
    elif task == IMAGE_TEXT_TO_TEXT:
        required = VLM_MODEL_FILES + TOKENIZER_FILES
    else:
        required = REQUIRED_FILES
    return [
        name
        for name in required
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0
    ]


def check_ir_folder(folder: Path, task: str = DEFAULT_TASK) -> None:
    """Refuse an output ``openvino_genai`` could not load as is (optimum only warns)."""
    missing = missing_files(folder, task)
    if missing:
        raise ConversionError(f"{folder}: conversion produced no {', '.join(missing)}")
    if task == SPEECH_TASK or task in SPEECH_TASKS:
        return
    if task in ENCODER_TASKS:
        gaps = tokenizer_gaps(folder)
        if gaps:
            raise ConversionError(f"{folder}: the tokenizer does not produce {', '.join(gaps)}")
        return
    if not chat_template_of(folder):
        log.warning("%s: the tokenizer has no chat template; chat requests will fail", folder)


def chat_template_of(folder: Path) -> str | None:
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer ops read_model needs)

    model = ov.Core().read_model(folder / "openvino_tokenizer.xml")
    if not model.has_rt_info("chat_template"):
        return None
    template = model.get_rt_info("chat_template").astype(str)
    return str(template) or None


def options_record(options: ExportOptions) -> dict[str, Any]:
    return asdict(options)
