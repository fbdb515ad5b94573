"""A tiny real vision-language model, built on this machine: a random-weight LLaVA.

No model hub is reachable, so the tests build their own: a byte-level BPE tokenizer trained
with ``tokenizers`` on local text (with LLaVA's ``<image>`` token), a chat template that
places an ``<image>`` where the client put each image part, a 2-layer Llama text model and a
2-layer CLIP vision tower whose ``image_size`` is 336, the size GenAI's LLaVA preprocessing
assumes, and a ``LlavaProcessor`` (CLIP's image processor: resize, crop to 336, normalise).
The weights mean nothing, but transformers on the same weights gives a reference to compare
the server's greedy answer with token for token.

LLaVA rather than Qwen2-VL or another family: this optimum-intel's other VLM exports cap
transformers below 5.0, which this project's conversion environment is above.

Converted by ``ov-convert-model``'s own workflow (task detected from ``config.json``) to fp16,
and cached by a hash of this file and of the converter under ``~/.cache/ov-llm-server``.
``SHAPES`` holds two sizes: ``tiny`` (what the tests use) and ``small``, a random model of a
real small VLM's shape (a SmolLM2-135M-sized Llama, a ViT-B/14 CLIP tower at 336), which
``bench/vision.py`` times: the tiny one answers in a millisecond a token, so any fixed cost
outweighs its compute as it never would on a real model.

Run ``python tests/tiny_vlm.py [tiny|small]`` to build (or find) the cache and print where it
is.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from tiny_model import building, default_cache_root, file_hash

log = logging.getLogger(__name__)

SEED = 2468
IMAGE_SIZE = 336
PATCH_SIZE = 14
# The vision tower's patches without its CLS token ("default" feature selection).
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
IMAGE_TOKEN = "<image>"
EOS_TOKEN = "</s>"
SPECIAL_TOKENS = ["<pad>", EOS_TOKEN, IMAGE_TOKEN, "<|user|>", "<|assistant|>", "<|system|>"]
VOCAB_SIZE = 400
WEIGHT_FORMAT = "fp16"
# Each shape: the text model's and the vision tower's dimensions, and the initial weights'
# spread (the tiny one's is wider than the default 0.02, so that its greedy choice wins by more
# than fp16 rounding).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": 32,
        },
        "initializer_range": 0.2,
    },
    "small": {
        "text": {
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
        },
        "vision": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "projection_dim": 512,
        },
        "initializer_range": 0.02,
    },
}

# String content or a list of parts; an image part becomes the model's image token in place.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '</s>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

CORPUS = """\
What is in this picture? Describe the image. A red square on a white background.
A blue circle and a green triangle. How many shapes do you see? Which colour is it?
The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100.
Say hello. Hello! Compare the two images. The first one is brighter than the second.
"""


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def build_hf_model(out_dir: Path, shape: str = "tiny") -> Path:
    """The random-weight LLaVA of ``shape`` and its processor, as a Hugging Face folder."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(SEED)
    tokenizer = build_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids("<pad>")
    dims = SHAPES[shape]
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        **dims["text"],
        max_position_embeddings=4096,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        initializer_range=dims["initializer_range"],
    )
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **dims["vision"])
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _converter_hash() -> str:
    import ov_llm_server.convert as convert_package

    folder = Path(convert_package.__file__).parent
    return file_hash(*sorted(folder.glob("*.py")))


def ensure_tiny_vlm(cache_root: Path | None = None, shape: str = "tiny") -> dict[str, Path]:
    """``{"hf": ..., "ir": ..., "registry": ...}``: the HF folder, the converted IR folder
    and the registry that names it ``tiny-vlm``; built once and cached."""
    from filelock import FileLock

    from ov_llm_server.convert.export import ExportOptions
    from ov_llm_server.convert.workflow import Layout, convert, output_dir

    name = "vlm" if shape == "tiny" else f"vlm-{shape}"
    root = (cache_root or default_cache_root()) / f"{name}-{file_hash(Path(__file__))}"
    root.mkdir(parents=True, exist_ok=True)
    hf = root / "hf"
    converted = root / f"models-{_converter_hash()}"
    with FileLock(str(root / ".lock"), timeout=1800):
        if not hf.is_dir():
            with building(hf) as tmp:
                build_hf_model(tmp, shape)
        if not converted.is_dir():
            with building(converted) as tmp:
                registry = tmp / "converted_models" / "registry.json"
                layout = Layout(models_dir=tmp, registry_path=registry)
                shutil.copytree(hf, tmp / "tiny-vlm")
                convert(layout, "tiny-vlm", ExportOptions(weight_format=WEIGHT_FORMAT))
    registry = converted / "converted_models" / "registry.json"
    layout = Layout(models_dir=converted, registry_path=registry)
    ir = output_dir(layout, "tiny-vlm", "image-text-to-text", WEIGHT_FORMAT)
    return {"hf": hf, "ir": ir, "registry": registry}


# ---------------------------------------------------------------- inputs and the reference


def draw_image(width: int = IMAGE_SIZE, height: int = IMAGE_SIZE, shift: int = 0) -> Any:
    """A Pillow drawing: a red square and a blue disc on white (``shift`` moves them)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((40 + shift, 60, 200 + shift, 220), fill="red")
    draw.ellipse((150, 150 - shift, 300, 300 - shift), fill="blue")
    return image


def reference_ids(
    hf_dir: Path, messages: list[dict[str, Any]], images: list[Any], max_new_tokens: int
) -> tuple[list[int], int]:
    """transformers' greedy answer (token ids) on the weights an fp16 IR holds, and the
    length of its prompt (image tokens included).

    Two things make GenAI's input differ from what transformers' processor makes of the same
    conversation, and both are matched here: GenAI's LLaVA writes a newline after each
    image's tokens (its ``normalize_prompt``; the processor writes none), and it reads the
    image preprocessing from ``preprocessor_config.json`` (which the converter writes, as
    transformers 5 keeps it inside ``processor_config.json``).
    """
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(str(hf_dir))
    model = LlavaForConditionalGeneration.from_pretrained(str(hf_dir)).eval()
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    prompt = prompt.replace(IMAGE_TOKEN, IMAGE_TOKEN + "\n")
    inputs = processor(images=images or None, text=prompt, return_tensors="pt")
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.copy_(weight.half().float())
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_length = int(inputs["input_ids"].shape[1])
    return [int(i) for i in out[0, prompt_length:]], prompt_length


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shape = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    for name, path in ensure_tiny_vlm(shape=shape).items():
        print(f"{name}: {path}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
