"""A tiny real text-to-speech model, built on this machine: SpeechT5 and a HiFi-GAN vocoder.

No model hub is reachable, so the tests build their own: a character-level vocabulary (what
SpeechT5's tokenizer is: one token a character, ``</s>`` at the end) in ``tokenizers``'
WordLevel model wrapped in ``PreTrainedTokenizerFast`` (SpeechT5's own tokenizer needs
sentencepiece), a ``SpeechT5ForTextToSpeech`` with small dimensions and random weights under a
fixed seed (speaker embeddings kept at SpeechT5's 512, the width of GenAI's built-in voice),
and a small ``SpeechT5HifiGan`` in the ``vocoder/`` subfolder, where ov-convert-model looks
for it. Two voices ship in ``speaker_embeddings/``: ``alloy.bin`` (raw float32) and
``echo.npy``.

Deterministic and bounded length: SpeechT5 stops decoding when its stop probability passes
``threshold`` (0.5), which a random model reaches at an arbitrary step (usually the first).
Its stop layer's bias is set to -30 here, so it never stops early: every text decodes to
``maxlenratio`` frames per token, two frames (``reduction_factor``) of 256 samples each a
decoder pass, i.e. ``int(tokens * maxlenratio / 2) * 2 * 256`` samples. ``maxlenratio`` is 6
(SpeechT5's default is 20) in ``generation_config.json``, which GenAI reads; the transformers
reference is called with the same value.

``SHAPES`` holds two sizes: ``tiny`` (what the tests use) and ``base``, a random model of
microsoft/speecht5_tts's shape with a HiFi-GAN of speecht5_hifigan's (transformers' default
configurations), which ``bench/speech.py`` times: the tiny one speaks a sentence in tens of
milliseconds, so any fixed cost outweighs its compute as it never would on a real model.

Run ``python tests/tiny_speecht5.py [tiny|base]`` to build (or find) the cache and print where
it is.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tiny_model import building, default_cache_root, file_hash

log = logging.getLogger(__name__)

SEED = 2024
SAMPLE_RATE = 16_000
HOP = 256  # samples per spectrogram frame: the vocoder's upsampling (4 * 4 * 4 * 4)
REDUCTION = 2  # frames per decoder pass
MAXLENRATIO = 6.0
SPEAKER_WIDTH = 512
VOICES = ("alloy", "echo")
WEIGHT_FORMATS = ("fp16", "int8")
TASK = "text-to-audio"
NAME = "speecht5-tiny"
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'-:;"
# The acoustic model's and the vocoder's dimensions: ``base`` takes transformers' defaults,
# which are the released models' own.
SHAPES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "model": {
            "hidden_size": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "speech_decoder_prenet_units": 32,
            "speech_decoder_postnet_units": 32,
            "speech_decoder_postnet_layers": 2,
        },
        "vocoder": {
            "upsample_initial_channel": 32,
            "upsample_rates": [4, 4, 4, 4],
            "upsample_kernel_sizes": [8, 8, 8, 8],
            "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3]],
        },
    },
    "base": {"model": {}, "vocoder": {}},
}


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in _CHARS:
        vocab.setdefault(char, len(vocab))
    chars = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    chars.normalizer = normalizers.Lowercase()
    chars.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    chars.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 2)]
    )
    chars.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=chars,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def expected_samples(tokens: int, maxlenratio: float = MAXLENRATIO) -> int:
    """Samples the never-stopping model produces for a text of ``tokens`` tokens."""
    return int(tokens * maxlenratio / REDUCTION) * REDUCTION * HOP


def voice(name: str) -> Any:
    import numpy as np

    rng = np.random.default_rng(SEED + VOICES.index(name))
    return rng.standard_normal((1, SPEAKER_WIDTH)).astype(np.float32)


def build_hf_model(out: Path, shape: str = "tiny") -> Path:
    import numpy as np
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out)
    torch.manual_seed(SEED)
    dims = SHAPES[shape]
    config = SpeechT5Config(
        vocab_size=len(tokenizer),
        **dims["model"],
        reduction_factor=REDUCTION,
        speaker_embedding_dim=SPEAKER_WIDTH,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    model = SpeechT5ForTextToSpeech(config).eval()
    with torch.no_grad():
        model.speech_decoder_postnet.prob_out.bias.fill_(-30.0)  # never stops early
    model.save_pretrained(out)
    generation = out / "generation_config.json"
    settings = json.loads(generation.read_text(encoding="utf-8"))
    generation.write_text(json.dumps({**settings, "maxlenratio": MAXLENRATIO}), encoding="utf-8")
    vocoder_config = SpeechT5HifiGanConfig(
        model_in_dim=config.num_mel_bins,
        sampling_rate=SAMPLE_RATE,
        **dims["vocoder"],
    )
    SpeechT5HifiGan(vocoder_config).eval().save_pretrained(out / "vocoder")
    voices = out / "speaker_embeddings"
    voices.mkdir()
    voice("alloy").astype("<f4").tofile(voices / "alloy.bin")
    np.save(voices / "echo.npy", voice("echo"))
    return out


def reference_waveform(hf_dir: Path, text: str, voice_name: str) -> Any:
    """transformers' waveform of ``text`` in ``voice_name`` (the same stopping settings)."""
    import torch
    from transformers import AutoTokenizer, SpeechT5ForTextToSpeech, SpeechT5HifiGan

    model = SpeechT5ForTextToSpeech.from_pretrained(hf_dir).eval()
    vocoder = SpeechT5HifiGan.from_pretrained(hf_dir / "vocoder").eval()
    ids = AutoTokenizer.from_pretrained(hf_dir)(text, return_tensors="pt").input_ids
    with torch.no_grad():
        wave = model.generate_speech(
            ids,
            torch.from_numpy(voice(voice_name)),
            threshold=0.5,
            minlenratio=0.0,
            maxlenratio=MAXLENRATIO,
            vocoder=vocoder,
        )
    return wave.numpy()


def _converter_hash() -> str:
    import ov_llm_server.convert as convert_package

    folder = Path(convert_package.__file__).parent
    return file_hash(*sorted(folder.glob("*.py")))


def _convert(hf_dir: Path, root: Path, formats: tuple[str, ...]) -> None:
    """Through ov-convert-model's own workflow, the task detected from the model's files."""
    from ov_llm_server.convert.export import ExportOptions
    from ov_llm_server.convert.workflow import Layout, convert

    layout = Layout(models_dir=root, registry_path=root / "converted_models" / "registry.json")
    shutil.copytree(hf_dir, root / NAME)
    for weight_format in formats:
        convert(layout, NAME, ExportOptions(weight_format=weight_format))  # type: ignore[arg-type]


def ensure_tiny_speecht5(cache_root: Path | None = None, shape: str = "tiny") -> dict[str, Path]:
    """``{"hf": HF folder, "<format>": IR folder, "registry": registry.json}`` (the tiny
    shape in every format the tests use, another in fp16 only)."""
    from filelock import FileLock

    from ov_llm_server.convert.workflow import Layout, output_dir

    kind = "speecht5" if shape == "tiny" else f"speecht5-{shape}"
    formats = WEIGHT_FORMATS if shape == "tiny" else ("fp16",)
    root = (cache_root or default_cache_root()) / f"{kind}-{file_hash(Path(__file__))}"
    root.mkdir(parents=True, exist_ok=True)
    hf_dir = root / "hf"
    converted = root / f"models-{_converter_hash()}"
    with FileLock(str(root / ".lock"), timeout=1800):
        if not hf_dir.is_dir():
            with building(hf_dir) as tmp:
                build_hf_model(tmp, shape)
        if not converted.is_dir():
            with building(converted) as tmp:
                _convert(hf_dir, tmp, formats)
    registry = converted / "converted_models" / "registry.json"
    layout = Layout(models_dir=converted, registry_path=registry)
    paths = {"hf": hf_dir, "registry": registry}
    for weight_format in formats:
        paths[weight_format] = output_dir(layout, NAME, TASK, weight_format)
    return paths


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    shape = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    for key, path in ensure_tiny_speecht5(shape=shape).items():
        sys.stdout.write(f"{key}: {path}\n")
    sys.stdout.write(f"ready in {time.monotonic() - started:.1f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
