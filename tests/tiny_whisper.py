"""A tiny real Whisper, built on this machine, and the speech it is tested on.

No model hub is reachable, so the tests build their own: a byte-level BPE vocabulary trained
with ``tokenizers`` on local text, followed by Whisper's special tokens in Whisper's order
(``<|endoftext|>``, ``<|startoftranscript|>``, the languages, ``<|translate|>``,
``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``, ``<|nocaptions|>``,
``<|notimestamps|>``, then the 1501 timestamps ``<|0.00|>`` to ``<|30.00|>``), a
``WhisperForConditionalGeneration`` with 2+2 layers of width 64 and random weights under a
fixed seed, and the ``generation_config.json`` GenAI reads (``lang_to_id``, ``task_to_id``,
``no_timestamps_token_id``).

A random Whisper prefers timestamp tokens to text: their rows of the (tied) output
projection are scaled down, so that the model writes text, and a timestamp only where the
timestamp rules force one. Its text means nothing, but transformers on the same weights and
audio gives the reference, token for token. Converted by ``ov-convert-model``'s own workflow
(the task detected from the model's config) and cached by a hash of this file and the
converter.

Speech: ``espeak-ng`` speaks the test sentences when it is installed; else a synthetic
voiced waveform (a glottal pulse train through moving formants) stands in. Either is
encoded to every container the tests upload with PyAV.

``SHAPES`` holds two sizes: ``tiny`` (what the tests use: 24 tokens a window keep them
quick) and ``base``, a random model of whisper-base's shape (6+6 layers of width 512, up to
128 tokens a window, about what 30 s of speech takes), which ``bench/transcription.py``
times: the tiny one transcribes in milliseconds, so any fixed cost outweighs its compute as
it never would on a real model.

Run ``python tests/tiny_whisper.py [tiny|base]`` to build (or find) the cache and print where
it is.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tiny_model import building, default_cache_root, file_hash

log = logging.getLogger(__name__)

SEED = 2026
SAMPLE_RATE = 16000
BPE_VOCAB = 400
LANGUAGES = ["en", "de", "fr", "es"]
# The model's dimensions, and how many tokens a window's answer may take (``max_length``: a
# random model rarely ends a window by itself, so this is what each window costs).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "config": {
            "d_model": 64,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
            "max_target_positions": 24,
        },
        "max_length": 24,
    },
    "base": {
        "config": {
            "d_model": 512,
            "encoder_layers": 6,
            "decoder_layers": 6,
            "encoder_attention_heads": 8,
            "decoder_attention_heads": 8,
            "encoder_ffn_dim": 2048,
            "decoder_ffn_dim": 2048,
            "max_target_positions": 448,
        },
        # About what 30 s of speech takes a real Whisper.
        "max_length": 128,
    },
}
TIMESTAMP_SCALE = 0.05
NAME = "whisper-tiny-random"

CORPUS = """\
The quick brown fox jumps over the lazy dog. Speech turns into text on a small computer.
Hello world, this is a test of the transcription service running on the node.
Open the window and let the fresh air in. The meeting starts at ten in the morning.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: . , ! ? : ; ( ) - / '
Guten Tag, wie geht es dir? Bonjour tout le monde. Hola, buenos dias.
"""
SENTENCE = "Hello world, this is a test of the transcription service."


def special_tokens() -> list[str]:
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{lang}|>" for lang in LANGUAGES],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
        *timestamps,
    ]


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer)
    tokenizer.add_special_tokens(special_tokens())
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def build_hf_model(out_dir: Path, shape: str = "tiny") -> Path:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    torch.manual_seed(SEED)
    tokenizer = build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in special_tokens()}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    no_timestamps = ids["<|notimestamps|>"]
    dims = SHAPES[shape]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        **dims["config"],
        max_source_positions=1500,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        begin_suppress_tokens=[eot],
        suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Tied with proj_out: the timestamps' logits shrink with their embeddings.
        model.model.decoder.embed_tokens.weight[no_timestamps + 1 :] *= TIMESTAMP_SCALE
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out_dir)
    generation = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=dims["max_length"],
        begin_suppress_tokens=[eot],
        suppress_tokens=[],
        is_multilingual=True,
        lang_to_id={f"<|{lang}|>": ids[f"<|{lang}|>"] for lang in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50,
        alignment_heads=[[1, 0], [1, 1]],
    )
    generation.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------- speech


def spoken(text: str = SENTENCE) -> tuple[np.ndarray[Any, Any], str]:
    """``text`` as 16 kHz mono float32, and how it was made (``espeak-ng`` or ``synthetic``)."""
    espeak = shutil.which("espeak-ng")
    if espeak is not None:
        done = subprocess.run([espeak, "--stdout", text], capture_output=True, check=True)
        return decode_wav(done.stdout), "espeak-ng"
    return synthetic_speech(2.5), "synthetic"


def synthetic_speech(seconds: float) -> np.ndarray[Any, Any]:
    """A voiced, speech-like waveform: a pulse train whose pitch and formants move."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    wave = np.zeros_like(t)
    for formant, width in ((700, 1.0), (1200, 0.6), (2500, 0.3)):
        moving = formant * (1 + 0.2 * np.sin(2 * np.pi * 1.3 * t + formant))
        harmonic = np.maximum(np.round(moving / pitch), 1)
        wave += width * np.sin(harmonic * phase)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * wave * envelope / np.abs(wave).max()).astype(np.float32)


def decode_wav(data: bytes) -> np.ndarray[Any, Any]:
    """A WAV's samples at 16 kHz mono, the reference's own way (PyAV's resampler)."""
    return decode_with_av(data)


def decode_with_av(data: bytes) -> np.ndarray[Any, Any]:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    parts: list[np.ndarray[Any, Any]] = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        parts.append(out.to_ndarray().reshape(-1))
    return np.concatenate(parts).astype(np.float32)


# Container format, codec and file suffix of each upload the tests make.
ENCODINGS = {
    "wav": ("wav", "pcm_s16le", "wav"),
    "mp3": ("mp3", "libmp3lame", "mp3"),
    "ogg": ("ogg", "libopus", "ogg"),
    "webm": ("webm", "libopus", "webm"),
    "flac": ("flac", "flac", "flac"),
    "m4a": ("ipod", "aac", "m4a"),
}


def encode(samples: np.ndarray[Any, Any], kind: str, rate: int = SAMPLE_RATE) -> bytes:
    """16 kHz mono float32 samples as a file of ``kind`` (a key of ``ENCODINGS``)."""
    import av

    container_format, codec, _ = ENCODINGS[kind]
    out_rate = 48000 if codec == "libopus" else rate
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate, layout="mono")
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name, layout="mono", rate=out_rate
        )
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


# ---------------------------------------------------------------- the reference


@functools.lru_cache(maxsize=2)
def _reference_model(hf_dir: Path) -> tuple[Any, Any, Any]:
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    return (
        model,
        AutoTokenizer.from_pretrained(hf_dir),
        WhisperFeatureExtractor.from_pretrained(hf_dir),
    )


def reference_transcription(
    hf_dir: Path,
    samples: np.ndarray[Any, Any],
    *,
    language: str | None = "en",
    task: str = "transcribe",
) -> str:
    """transformers' greedy text for one window of audio (at most 30 s)."""
    import torch

    model, tokenizer, extractor = _reference_model(hf_dir)
    features = extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(
            features,
            language=language,
            task=task,
            return_timestamps=False,
            do_sample=False,
            num_beams=1,
        )
    return str(tokenizer.decode(ids[0], skip_special_tokens=True))


# ---------------------------------------------------------------- cache


def _converter_hash() -> str:
    import ov_llm_server.convert as convert_package

    folder = Path(convert_package.__file__).parent
    return file_hash(*sorted(folder.glob("*.py")))


def ensure_tiny_whisper(cache_root: Path | None = None, shape: str = "tiny") -> dict[str, Path]:
    """``{"hf": HF folder, "fp16": IR folder, "registry": registry.json}``."""
    from filelock import FileLock

    from ov_llm_server.convert.export import ExportOptions
    from ov_llm_server.convert.workflow import Layout, convert, output_dir

    kind = "whisper" if shape == "tiny" else f"whisper-{shape}"
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
                shutil.copytree(hf_dir, tmp / NAME)
                layout = Layout(
                    models_dir=tmp, registry_path=tmp / "converted_models" / "registry.json"
                )
                convert(layout, NAME, ExportOptions(weight_format="fp16"))
    registry = converted / "converted_models" / "registry.json"
    layout = Layout(models_dir=converted, registry_path=registry)
    task = json.loads(registry.read_text())["models"][f"{NAME}-fp16"]["task"]
    return {"hf": hf_dir, "fp16": output_dir(layout, NAME, task, "fp16"), "registry": registry}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    shape = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    for key, path in ensure_tiny_whisper(shape=shape).items():
        sys.stdout.write(f"{key}: {path}\n")
    sys.stdout.write(f"ready in {time.monotonic() - started:.1f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
