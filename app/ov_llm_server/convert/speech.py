"""Text-to-speech models (SpeechT5) for the converter: detection, vocoder, voices, files.

optimum-intel exports SpeechT5 as four models (encoder, decoder, postnet, and a HiFi-GAN
vocoder that turns spectrograms into waveforms), which is the layout GenAI's
``Text2SpeechPipeline`` loads. The vocoder is a model of its own on the Hub
(``microsoft/speecht5_hifigan``): ov-convert-model takes it from the source folder's
``vocoder/`` subfolder. Speaker embeddings in ``speaker_embeddings/`` (the server's voices)
are copied into the IR folder as they are, and so are the source's stopping settings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

VOCODER_DIR = "vocoder"
VOICES_DIR = "speaker_embeddings"
# How SpeechT5 decides when to stop (frames per token at least and at most, stop probability):
# GenAI reads them from generation_config.json, which optimum-intel writes without them.
GENERATION_SETTINGS = ("minlenratio", "maxlenratio", "threshold")
IR_FILES = tuple(
    f"openvino_{name}.{ext}"
    for name in ("encoder_model", "decoder_model", "postnet", "vocoder", "tokenizer")
    for ext in ("xml", "bin")
)


class SpeechSourceError(ValueError):
    """A text-to-speech source folder the converter cannot export: the message says why."""


def is_speech_model(hf_config: dict[str, Any]) -> bool:
    architectures = hf_config.get("architectures") or []
    return "SpeechT5ForTextToSpeech" in architectures


def vocoder_kwargs(src: Path) -> dict[str, Any]:
    """optimum-intel's ``model_kwargs`` for a SpeechT5 export: where its vocoder is."""
    vocoder = src / VOCODER_DIR
    if not (vocoder / "config.json").is_file():
        raise SpeechSourceError(
            f"{src}: SpeechT5 needs its vocoder to be converted with it: put a SpeechT5 "
            f"HiFi-GAN (e.g. microsoft/speecht5_hifigan) in {vocoder}/"
        )
    return {"vocoder": str(vocoder)}


def copy_extras(src: Path, out: Path) -> None:
    """What the export leaves behind: the voices, and the source's stopping settings."""
    voices = src / VOICES_DIR
    if voices.is_dir():
        shutil.copytree(voices, out / VOICES_DIR)
    try:
        source = json.loads((src / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(source, dict):
        return
    settings = {key: source[key] for key in GENERATION_SETTINGS if key in source}
    if settings:
        target = out / "generation_config.json"
        exported = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else {}
        target.write_text(json.dumps({**exported, **settings}, indent=2), encoding="utf-8")
