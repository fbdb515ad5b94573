"""Speech to text: ``/v1/audio/transcriptions`` and ``/translations`` on a real server running
the tiny random Whisper (tests/tiny_whisper.py) in ``WhisperPipeline``, against transformers'
greedy text on the same weights and the same decoded audio; plus the pure parts (windows,
container sniffing, subtitles, the converter's task, placement)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import yaml
from tiny_whisper import (
    ENCODINGS,
    decode_with_av,
    encode,
    ensure_tiny_whisper,
    reference_transcription,
    spoken,
)

from litellm_proxy import litellm_config, requires_litellm, running_proxy
from live_server import LiveServer, error_of
from ov_llm_server.capabilities import engine_kind
from ov_llm_server.convert.export import ExportOptions, resolve_task
from ov_llm_server.engine.core.transcribe import SAMPLE_RATE, WINDOW, window_end
from ov_llm_server.engine.messages import Segment
from ov_llm_server.litellm import model_info
from ov_llm_server.placement import choose_device
from ov_llm_server.protocol import ModelCard
from ov_llm_server.protocol_audio import srt, vtt
from ov_llm_server.registry import SPEECH_RECOGNITION, ModelEntry
from ov_llm_server.serving.audio_input import sniff
from ov_llm_server.settings import Settings

MODEL = "whisper"
MAX_AUDIO_BYTES = 3_000_000
MAX_AUDIO_SECONDS = 90


# ---------------------------------------------------------------- units


def test_a_window_reaching_the_end_takes_the_rest() -> None:
    samples = np.ones(WINDOW + 100, dtype=np.float32)
    assert window_end(samples, 200) == len(samples)
    assert window_end(samples[:1000], 0) == 1000


def test_a_long_window_is_cut_at_its_quietest_moment() -> None:
    samples = np.full(3 * WINDOW, 0.5, dtype=np.float32)
    quiet = 27 * SAMPLE_RATE
    samples[quiet : quiet + SAMPLE_RATE // 10] = 0.0
    end = window_end(samples, 0)
    assert quiet <= end < quiet + SAMPLE_RATE // 10
    # From a later start the cut moves with it, never past 30 s.
    assert WINDOW + 25 * SAMPLE_RATE <= window_end(samples, WINDOW) <= 2 * WINDOW


def test_containers_are_recognised_from_their_first_bytes() -> None:
    samples = np.zeros(SAMPLE_RATE // 4, dtype=np.float32)
    demuxers = {"wav": "wav", "mp3": "mp3", "ogg": "ogg", "webm": "matroska", "flac": "flac"}
    for kind, demuxer in {**demuxers, "m4a": "mov"}.items():
        assert sniff(encode(samples, kind)) == demuxer, kind
    assert sniff(b"#EXTM3U\nhttp://example.com/a.ts\n") is None  # a playlist is never probed
    assert sniff(b"ffconcat version 1.0\nfile /etc/passwd\n") is None
    assert sniff(b"\x89PNG\r\n\x1a\n") is None
    assert sniff(b"") is None


def test_subtitles() -> None:
    segments = [Segment(0.0, 1.5, " Hello"), Segment(61.25, 3725.004, " world")]
    assert srt(segments) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello\n\n2\n00:01:01,250 --> 01:02:05,004\nworld\n"
    )
    assert vtt(segments) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello\n\n00:01:01.250 --> 01:02:05.004\nworld\n"
    )


def test_the_task_picks_the_engine_and_the_cpu(tmp_path: Path) -> None:
    assert engine_kind(SPEECH_RECOGNITION) == "whisper"
    assert engine_kind("automatic-speech-recognition") == "whisper"
    settings = Settings(device="GPU", registry_path=tmp_path / "registry.json")
    entry = ModelEntry(path="m", task=SPEECH_RECOGNITION)
    assert choose_device(entry, settings).device == "CPU"
    assert choose_device(entry.model_copy(update={"device": "GPU.1"}), settings).device == "GPU.1"
    assert choose_device(ModelEntry(path="m"), settings).device == "GPU"
    everywhere = Settings(device="GPU", audio_device="", registry_path=tmp_path / "r.json")
    assert choose_device(entry, everywhere).device == "GPU"
    card = ModelCard(id="w", created=0, mode="audio_transcription")
    assert model_info(card) == {"mode": "audio_transcription"}


# ---------------------------------------------------------------- the model and a server


@pytest.fixture(scope="module")
def whisper() -> dict[str, Path]:
    return ensure_tiny_whisper()


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray[Any, Any], str]:
    return spoken()


def test_the_converter_detects_whisper(whisper: dict[str, Path]) -> None:
    assert resolve_task(whisper["hf"], ExportOptions()).task == SPEECH_RECOGNITION
    registry = json.loads(whisper["registry"].read_text())
    (entry,) = registry["models"].values()
    assert entry["task"] == SPEECH_RECOGNITION


@pytest.fixture(scope="module")
def live(server_factory: Any, whisper: dict[str, Path]) -> LiveServer:
    registry = {
        MODEL: {"path": str(whisper["fp16"]), "task": SPEECH_RECOGNITION},
        # Never loaded: a request for it is refused at admission, by its kind.
        "chat": {"path": "/nonexistent", "task": "text-generation-with-past"},
    }
    return server_factory(
        registry,
        OV_MAX_AUDIO_BYTES=str(MAX_AUDIO_BYTES),
        OV_MAX_AUDIO_SECONDS=str(MAX_AUDIO_SECONDS),
    )


def post(live: LiveServer, data: bytes, name: str = "speech.wav", **form: Any) -> httpx.Response:
    fields = {"model": MODEL, **form}
    return httpx.post(
        f"{live.v1}/audio/transcriptions", data=fields, files={"file": (name, data)}, timeout=120
    )


def engine_pid(live: LiveServer) -> int:
    health = httpx.get(f"{live.base_url}/health", timeout=10).json()
    (slot,) = [m for m in health["loaded_models"] if m["name"] == MODEL]
    assert slot["state"] == "ready"
    return int(slot["pid"])


def test_each_container_gives_transformers_text(
    live: LiveServer, whisper: dict[str, Path], speech: tuple[np.ndarray[Any, Any], str]
) -> None:
    samples, _ = speech
    for kind, (_, _, suffix) in ENCODINGS.items():
        data = encode(samples, kind)
        response = post(live, data, f"speech.{suffix}", language="en")
        assert response.status_code == 200, (kind, response.text)
        body = response.json()
        decoded = decode_with_av(data)
        expected = reference_transcription(whisper["hf"], decoded)
        assert body["text"] == expected.lstrip(), kind
        assert body["text"]
        seconds = max(1, round(len(decoded) / SAMPLE_RATE))
        assert body["usage"] == {"type": "duration", "seconds": seconds}


def test_long_audio_is_served_window_by_window(
    live: LiveServer, whisper: dict[str, Path], speech: tuple[np.ndarray[Any, Any], str]
) -> None:
    """Speech at 0 s, 31 s and 62 s: three windows, each transformers' text for that window,
    timestamps in the audio's time."""
    voice, _ = speech
    samples = np.zeros(70 * SAMPLE_RATE, dtype=np.float32)
    for second in (0, 31, 62):
        samples[second * SAMPLE_RATE : second * SAMPLE_RATE + len(voice)] = voice
    data = encode(samples, "ogg")  # 70 s of WAV would be over the upload limit
    decoded = decode_with_av(data)
    cuts = [0]
    while cuts[-1] < len(decoded):
        cuts.append(window_end(decoded, cuts[-1]))
    assert len(cuts) == 4
    expected = "".join(
        reference_transcription(whisper["hf"], decoded[a:b]) for a, b in itertools.pairwise(cuts)
    )
    body = post(live, data, "long.ogg", language="en").json()
    assert body["text"] == expected.lstrip()

    verbose = post(live, data, "long.ogg", language="en", response_format="verbose_json").json()
    assert verbose["duration"] == pytest.approx(len(decoded) / SAMPLE_RATE, abs=0.01)
    starts = [segment["start"] for segment in verbose["segments"]]
    assert starts == sorted(starts)
    assert all(0 <= s["start"] <= s["end"] <= verbose["duration"] for s in verbose["segments"])
    assert any(s >= cuts[2] / SAMPLE_RATE for s in starts), "no segment in the third window"
    assert verbose["text"] == "".join(s["text"] for s in verbose["segments"]).lstrip()


def test_streamed_deltas_add_up_to_the_text(
    live: LiveServer, speech: tuple[np.ndarray[Any, Any], str]
) -> None:
    voice, _ = speech
    samples = np.zeros(40 * SAMPLE_RATE, dtype=np.float32)
    samples[: len(voice)] = voice
    samples[32 * SAMPLE_RATE : 32 * SAMPLE_RATE + len(voice)] = voice
    data = encode(samples, "flac")
    whole = post(live, data, "two.flac", language="en").json()["text"]
    fields = {"model": MODEL, "language": "en", "stream": "true"}
    events = []
    with httpx.stream(
        "POST",
        f"{live.v1}/audio/transcriptions",
        data=fields,
        files={"file": ("two.flac", data)},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    assert len(deltas) == 2  # one per window, each as soon as it is done
    assert events[-1]["type"] == "transcript.text.done"
    assert events[-1]["text"] == "".join(deltas) == whole


def test_the_openai_sdk(live: LiveServer, speech: tuple[np.ndarray[Any, Any], str]) -> None:
    samples, _ = speech
    data = encode(samples, "mp3")
    client = openai.OpenAI(base_url=live.v1, api_key="none", max_retries=0)
    plain = client.audio.transcriptions.create(
        model=MODEL, file=("speech.mp3", data), language="en"
    )
    assert plain.text
    text = client.audio.transcriptions.create(
        model=MODEL, file=("speech.mp3", data), language="en", response_format="text"
    )
    assert text.strip() == plain.text

    verbose = client.audio.transcriptions.create(
        model=MODEL,
        file=("speech.mp3", data),
        language="en",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(len(samples) / SAMPLE_RATE, abs=0.1)
    assert verbose.segments and verbose.words is not None
    for piece in [*verbose.segments, *verbose.words]:
        assert 0 <= piece.start <= piece.end <= verbose.duration

    for response_format, first_line in (("srt", "1"), ("vtt", "WEBVTT")):
        subtitles = client.audio.transcriptions.create(
            model=MODEL,
            file=("speech.mp3", data),
            language="en",
            response_format=response_format,  # type: ignore[call-overload]
        )
        assert str(subtitles).splitlines()[0] == first_line
        assert "-->" in str(subtitles)

    events = list(
        client.audio.transcriptions.create(
            model=MODEL, file=("speech.mp3", data), language="en", stream=True
        )
    )
    assert [event.type for event in events][-1] == "transcript.text.done"
    assert events[-1].text == plain.text  # type: ignore[union-attr]

    translated = client.audio.translations.create(model=MODEL, file=("speech.mp3", data))
    assert translated.text
    # A prompt longer than the model's whole context is cut, not a crash.
    for prompt in ("hello world", "the quick brown fox " * 100):
        prompted = client.audio.transcriptions.create(
            model=MODEL, file=("speech.mp3", data), language="en", prompt=prompt
        )
        assert prompted.text is not None


def test_bad_input_is_refused_and_the_engine_serves_on(
    live: LiveServer, speech: tuple[np.ndarray[Any, Any], str]
) -> None:
    samples, _ = speech
    wav = encode(samples, "wav")
    assert post(live, wav).status_code == 200
    pid = engine_pid(live)

    for data, name in (
        (b"hello, this is text, not audio\n" * 10, "notes.txt"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(200), "broken.wav"),
        (wav[: len(wav) // 8][:60], "cut.wav"),
        (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "list.m3u8"),
    ):
        error = error_of(post(live, data, name), 400)
        assert error["param"] == "file", name
        assert error["code"] == "invalid_audio", name

    too_long = encode(np.zeros((MAX_AUDIO_SECONDS + 5) * SAMPLE_RATE, np.float32), "ogg")
    assert error_of(post(live, too_long, "long.ogg"), 400)["code"] == "audio_too_long"
    too_big = wav[:44] + bytes(MAX_AUDIO_BYTES - 44 + 1)
    assert error_of(post(live, too_big), 413)["code"] == "audio_too_large"
    far_too_big = bytes(MAX_AUDIO_BYTES + 200_000)
    assert error_of(post(live, far_too_big), 413)["code"] == "request_too_large"

    assert error_of(post(live, wav, model="nope"), 404)["param"] == "model"
    assert error_of(post(live, wav, model="chat"), 400)["code"] == "wrong_model_kind"
    assert error_of(post(live, wav, language="xx"), 400)["param"] == "language"
    assert error_of(post(live, wav, language="English"), 400)["param"] == "language"
    assert error_of(post(live, wav, response_format="mp4"), 400)["param"] == "response_format"
    assert error_of(post(live, wav, temperature="2"), 400)["param"] == "temperature"
    granularity = error_of(post(live, wav, **{"timestamp_granularities[]": "word"}), 400)
    assert granularity["param"] == "timestamp_granularities"
    streamed_srt = error_of(post(live, wav, stream="true", response_format="srt"), 400)
    assert streamed_srt["param"] == "stream"
    url = f"{live.v1}/audio/transcriptions"
    no_file = httpx.post(url, files={"model": (None, MODEL)}, timeout=30)
    assert error_of(no_file, 400)["param"] == "file"
    file_as_text = httpx.post(url, files={"model": (None, MODEL), "file": (None, "x")}, timeout=30)
    assert error_of(file_as_text, 400)["param"] == "file"
    as_json = httpx.post(url, json={"model": MODEL}, timeout=30)
    assert error_of(as_json, 400)["code"] == "invalid_content_type"
    chat = httpx.post(
        f"{live.v1}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert error_of(chat, 400)["code"] == "wrong_model_kind"

    assert post(live, wav).status_code == 200
    assert post(live, wav, temperature="0.7").status_code == 200  # sampled
    assert engine_pid(live) == pid


def test_models_and_metrics_show_the_speech_model(live: LiveServer) -> None:
    cards = httpx.get(f"{live.v1}/models", timeout=30).json()["data"]
    (card,) = [c for c in cards if c["id"] == MODEL]
    assert card["mode"] == "audio_transcription"
    assert card["task"] == SPEECH_RECOGNITION
    assert card["device"] == "CPU"
    assert card["precision_hint"] == "f32"
    metrics = httpx.get(f"{live.base_url}/metrics", timeout=30).text
    assert f'ov_requests_total{{model="{MODEL}",status="200"}}' in metrics


def test_a_killed_engine_is_replaced(
    live: LiveServer, speech: tuple[np.ndarray[Any, Any], str]
) -> None:
    import os
    import signal
    import time

    samples, _ = speech
    wav = encode(samples, "wav")
    assert post(live, wav).status_code == 200
    pid = engine_pid(live)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = post(live, wav)
        if response.status_code == 200:
            break
        assert response.status_code == 503, response.text
        time.sleep(0.5)
    assert response.status_code == 200
    assert engine_pid(live) != pid


@requires_litellm
def test_through_litellm(
    live: LiveServer,
    speech: tuple[np.ndarray[Any, Any], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """ov-llm-server litellm-config declares the model for LiteLLM's transcription route, and
    a real LiteLLM proxy forwards the upload and the answer."""
    config = litellm_config(live, "--api-base", live.v1)
    (entry,) = [m for m in yaml.safe_load(config)["model_list"] if m["model_name"] == MODEL]
    assert entry["model_info"] == {"mode": "audio_transcription"}
    samples, _ = speech
    data = encode(samples, "webm")
    # LiteLLM asks for verbose_json (it bills by the duration), whose text Whisper decodes
    # with timestamps.
    verbose = post(live, data, "speech.webm", language="en", response_format="verbose_json")
    direct = verbose.json()["text"]
    with running_proxy(config, tmp_path_factory.mktemp("litellm")) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.key, max_retries=0)
        routed = client.audio.transcriptions.create(
            model=MODEL, file=("speech.webm", data), language="en"
        )
    assert routed.text == direct


def test_one_window_per_step_and_requests_take_turns(
    whisper: dict[str, Path], speech: tuple[np.ndarray[Any, Any], str]
) -> None:
    """The engine's runner, in this process: a 70 s request is served over three steps, and a
    short one that arrives after it is answered after the long one's first window, not its
    last."""
    from ov_llm_server.engine.core.transcribe import WhisperRunner
    from ov_llm_server.engine.messages import EngineConfig, Transcribe, Transcribed

    voice, _ = speech
    long = np.zeros(70 * SAMPLE_RATE, dtype=np.float32)
    long[: len(voice)] = voice
    runner = WhisperRunner(whisper["fp16"], EngineConfig(device="CPU", inference_precision="f32"))
    assert runner.add(Transcribe(1, long.astype("<f4").tobytes(), language="en")) is None
    assert runner.add(Transcribe(2, voice.astype("<f4").tobytes(), language="en")) is None
    finished = []
    for _ in range(4):
        assert runner.busy
        finished += [r.rid for r in runner.step() if isinstance(r, Transcribed)]
        finished.append(0)  # a step boundary
    assert not runner.busy
    assert finished == [0, 2, 0, 0, 1, 0]
