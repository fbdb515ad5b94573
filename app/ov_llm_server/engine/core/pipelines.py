"""Building a model's pipeline, as the engine process runs it (the benchmark builds it here too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openvino_genai as og

from ..messages import EngineConfig
from .precision import effective_precision, hint_properties
from .speculation import kv_cache_precision, pipeline_properties, prefix_caching


def build_pipeline(path: Path, config: EngineConfig) -> Any:
    """The continuous-batching pipeline of one generative model."""
    scheduler = og.SchedulerConfig()
    # 0 lets the KV cache grow with demand instead of reserving it up front.
    scheduler.cache_size = config.kv_cache_gb
    scheduler.max_num_seqs = config.max_batch
    scheduler.dynamic_split_fuse = True
    scheduler.enable_prefix_caching = prefix_caching(config)
    properties: dict[str, Any] = {
        **pipeline_properties(config),
        **hint_properties(config.inference_precision),
    }
    precision = kv_cache_precision(config)
    if precision:
        properties["KV_CACHE_PRECISION"] = precision
        if precision == "f32":
            # Paged attention refuses an f32 cache beside bf16/f16 inference.
            properties.update(hint_properties("f32"))
    if config.cache_dir is not None:
        Path(config.cache_dir).mkdir(parents=True, exist_ok=True)
        properties["CACHE_DIR"] = config.cache_dir
    return og.ContinuousBatchingPipeline(str(path), scheduler, config.device, properties)


def encoder_properties(config: EngineConfig) -> dict[str, Any]:
    """OpenVINO properties of an embedding or rerank pipeline: precision, model cache."""
    properties: dict[str, Any] = hint_properties(config.inference_precision)
    if config.cache_dir is not None:
        Path(config.cache_dir).mkdir(parents=True, exist_ok=True)
        properties["CACHE_DIR"] = config.cache_dir
    return properties


def compute_precision(config: EngineConfig) -> str | None:
    """The precision the pipeline that ``config`` builds computes in (what /health shows)."""
    hint = config.inference_precision
    if kv_cache_precision(config) == "f32":
        hint = "f32"
    return effective_precision(config.device, hint)
