"""Text to speech: ``POST /v1/audio/speech`` on a real server running the tiny SpeechT5
(``tests/tiny_speecht5.py``, converted by ov-convert-model's workflow) in its own engine.

The server's waveform is compared with GenAI's ``Text2SpeechPipeline`` run directly on the same
IR (sample for sample, through 16-bit wav) and with transformers on the HF weights (length and
sample rate; the tiny model never stops early, so both decode exactly ``maxlenratio`` frames a
token). Every ``response_format`` is decoded back with PyAV.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import time
import wave
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import openai
import pytest

from litellm_proxy import litellm_config, requires_litellm, running_proxy
from live_server import LiveServer, error_of
from ov_llm_server.audio_encode import PCM_RATE, change_speed, encode
from ov_llm_server.engine.core.speech import MAX_CHUNK_CHARS, chunks
from tiny_speecht5 import (
    NAME,
    SAMPLE_RATE,
    TASK,
    expected_samples,
    reference_waveform,
    voice,
)

MAX_CHARS = 300
POISON = "zzpoison"  # a text carrying it breaks the pipeline call that runs it (faults.py)
TEXT = "Hello there."
SENTENCES = ["Good morning.", "The fox jumps!", "Is it late?"]


# ---------------------------------------------------------------- pure logic


def test_chunks_cut_at_sentences_then_pauses_then_spaces() -> None:
    assert chunks("  One. Two!  Three?\nFour  ") == ["One.", "Two!", "Three?", "Four"]
    assert chunks("   ") == []
    long = ("word, " * 60).strip()  # 359 characters, commas throughout
    pieces = chunks(long, 100)
    assert all(len(p) <= 100 for p in pieces) and all(p.endswith(",") for p in pieces[:-1])
    assert " ".join(pieces) == long
    spaces = "abc " * 80
    assert " ".join(chunks(spaces, 50)) == spaces.strip()
    unbroken = "x" * 250
    assert chunks(unbroken, MAX_CHUNK_CHARS) == ["x" * MAX_CHUNK_CHARS, "x" * 50]


def _decode(data: bytes) -> tuple[np.ndarray, int, str]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        return np.concatenate(frames), int(stream.rate), str(stream.codec_context.name)


@pytest.mark.parametrize(
    ("audio_format", "codec", "rate"),
    [
        ("mp3", "mp3float", SAMPLE_RATE),
        ("opus", "opus", 48_000),
        ("aac", "aac", SAMPLE_RATE),
        ("flac", "flac", SAMPLE_RATE),
        ("wav", "pcm_s16le", SAMPLE_RATE),
    ],
)
def test_each_format_decodes_back_to_the_same_length(
    audio_format: Any, codec: str, rate: int
) -> None:
    seconds = 1.5
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    samples, got_rate, got_codec = _decode(encode(tone, SAMPLE_RATE, audio_format))
    assert (got_codec, got_rate) == (codec, rate)
    # Encoders pad to whole frames (aac adds up to about 0.1 s of priming).
    assert seconds <= samples.size / got_rate < seconds + 0.15


def test_pcm_is_24_khz_16_bit_and_speed_keeps_the_pitch() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    pcm = np.frombuffer(encode(tone, SAMPLE_RATE, "pcm"), dtype="<i2")
    assert abs(pcm.size - PCM_RATE) <= 64
    for speed in (0.25, 0.5, 2.0, 4.0):
        faster = change_speed(tone, SAMPLE_RATE, speed)
        assert faster.size / tone.size == pytest.approx(1 / speed, rel=0.05)
        spectrum = np.abs(np.fft.rfft(faster))
        peak = np.argmax(spectrum) * SAMPLE_RATE / faster.size
        assert peak == pytest.approx(500, abs=15)  # the same tone, not a resampled one


def test_speech_runs_on_the_cpu_unless_its_entry_says_otherwise() -> None:
    from ov_llm_server.placement import choose_device
    from ov_llm_server.registry import ModelEntry
    from ov_llm_server.settings import Settings

    settings = Settings(device="GPU")
    speech = ModelEntry(path="tts", task=TASK)
    assert choose_device(speech, settings).device == "CPU"
    assert choose_device(ModelEntry(path="tts", task=TASK, device="GPU.1"), settings).device == (
        "GPU.1"
    )
    assert choose_device(speech, Settings(device="GPU", audio_device="")).device == "GPU"
    assert choose_device(ModelEntry(path="llm"), settings).device == "GPU"


# ---------------------------------------------------------------- the converted model


@pytest.fixture(scope="module")
def speecht5() -> dict[str, Path]:
    from tiny_model import default_cache_root
    from tiny_speecht5 import ensure_tiny_speecht5

    return ensure_tiny_speecht5(default_cache_root())


@pytest.fixture(scope="module")
def pipeline(speecht5: dict[str, Path]) -> Any:
    import openvino_genai as og

    return og.Text2SpeechPipeline(str(speecht5["fp16"]), "CPU", INFERENCE_PRECISION_HINT="f32")


def direct(pipeline: Any, text: str, voice_name: str | None) -> tuple[np.ndarray, int]:
    import openvino as ov

    if voice_name is None:
        result = pipeline.generate(text)
    else:
        result = pipeline.generate(text, ov.Tensor(voice(voice_name)))
    # A copy: the array the tensor exposes dies with ``result``.
    samples = np.array(result.speeches[0].data, copy=True).reshape(-1)
    return samples, int(result.output_sample_rate)


def test_the_converter_detects_speecht5_and_ships_its_voices(speecht5: dict[str, Path]) -> None:
    registry = json.loads(speecht5["registry"].read_text(encoding="utf-8"))
    tasks = {name: entry["task"] for name, entry in registry["models"].items()}
    assert tasks == {f"{NAME}-fp16": TASK, f"{NAME}-int8": TASK}
    for weight_format in ("fp16", "int8"):
        voices = speecht5[weight_format] / "speaker_embeddings"
        assert sorted(p.name for p in voices.iterdir()) == ["alloy.bin", "echo.npy"]
        assert (speecht5[weight_format] / "openvino_vocoder.xml").is_file()


def test_verify_loads_it_in_the_pipeline_that_serves_it(speecht5: dict[str, Path]) -> None:
    from ov_llm_server.convert.workflow import Layout, registry_entries, verify_entry

    registry = speecht5["registry"]
    layout = Layout(models_dir=registry.parent.parent, registry_path=registry)
    for name, entry in registry_entries(layout).items():
        check = verify_entry(layout, name, entry, load=True, device="CPU")
        assert check.ok and not check.notes, (name, check)


def test_a_speecht5_without_its_vocoder_is_refused(tmp_path: Path) -> None:
    from ov_llm_server.convert.export import ConversionError, ExportOptions, export_model

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(
        json.dumps({"architectures": ["SpeechT5ForTextToSpeech"], "model_type": "speecht5"})
    )
    with pytest.raises(ConversionError, match="vocoder"):
        export_model(tmp_path / "src", tmp_path / "out", ExportOptions(weight_format="fp16"))


def test_genai_matches_transformers(speecht5: dict[str, Path], pipeline: Any) -> None:
    from transformers import AutoTokenizer

    tokens = len(AutoTokenizer.from_pretrained(speecht5["hf"])(TEXT).input_ids)
    for voice_name in ("alloy", "echo"):
        samples, rate = direct(pipeline, TEXT, voice_name)
        reference = reference_waveform(speecht5["hf"], TEXT, voice_name)
        assert rate == SAMPLE_RATE
        assert samples.size == reference.size == expected_samples(tokens)
        # fp16 weights: the same waveform up to their rounding.
        assert np.corrcoef(samples, reference)[0, 1] > 0.99


# ---------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults") / "fault"


@pytest.fixture(scope="module")
def live(
    server_factory: Any,
    speecht5: dict[str, Path],
    tiny_registry: dict[str, Any],
    faults: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> LiveServer:
    # Two voices named in the registry: a copy of echo outside the model folder, and a file
    # that is not there.
    extra = tmp_path_factory.mktemp("voices") / "carol.npy"
    extra.write_bytes((speecht5["fp16"] / "speaker_embeddings" / "echo.npy").read_bytes())
    voices = {"carol": str(extra), "broken": "speaker_embeddings/missing.bin"}
    registry = {
        "tts": {
            "path": str(speecht5["fp16"]),
            "task": TASK,
            "weight_format": "fp16",
            "voices": voices,
        },
        # Another name of the same folder, without the registry's voices.
        "tts-plain": {"path": str(speecht5["fp16"]), "task": TASK, "weight_format": "fp16"},
        "tiny-int8": tiny_registry["tiny-int8"],
    }
    # OV_DEVICE names a device this machine lacks: the speech model must not go there.
    return server_factory(
        registry,
        OV_DEVICE="NPU",
        OV_MAX_SPEECH_CHARS=str(MAX_CHARS),
        OV_MAX_LOADED_MODELS="1",
        OV_ENGINE_POISON=POISON,
        OV_ENGINE_FAULTS_FILE=str(faults),
    )


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key="none", max_retries=0, timeout=120)


def speak(live: LiveServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{live.v1}/audio/speech", json={"model": "tts", **body}, timeout=120)


def _wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        frames = reader.readframes(reader.getnframes())
        return np.frombuffer(frames, dtype="<i2") / 32767.0, reader.getframerate()


def test_the_sdk_gets_the_direct_pipelines_waveform(
    client: openai.OpenAI, pipeline: Any, live: LiveServer
) -> None:
    for voice_name in ("alloy", "echo"):
        response = client.audio.speech.create(
            model="tts", voice=voice_name, input=TEXT, response_format="wav"
        )
        samples, rate = _wav(response.read())
        expected, expected_rate = direct(pipeline, TEXT, voice_name)
        assert rate == expected_rate == SAMPLE_RATE
        assert samples.size == expected.size
        assert np.abs(samples - np.clip(expected, -1, 1)).max() <= 2 / 32767
    (engine,) = httpx.get(f"{live.base_url}/health").json()["loaded_models"]
    assert engine["kind"] == "speech" and engine["device"] == "CPU"


def test_a_voice_named_in_the_registry_speaks_its_file(live: LiveServer) -> None:
    carol = speak(live, input=TEXT, voice="carol", response_format="wav")
    echo = speak(live, input=TEXT, voice="echo", response_format="wav")
    assert carol.status_code == echo.status_code == 200
    assert carol.content == echo.content
    # A file the registry names that is not there: that voice is left out, with a warning,
    # and a request for it is a 400 naming the voices there are.
    refused = speak(live, input=TEXT, voice="broken")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "voice" and "carol" in error["message"]
    assert "broken" not in error["message"].split("voices:")[-1]
    (engine,) = httpx.get(f"{live.base_url}/health").json()["loaded_models"]
    assert any("voice broken" in warning for warning in engine["warnings"])
    # The voices are the entry's: the other name of the folder has none of them.
    plain = httpx.post(
        f"{live.v1}/audio/speech",
        json={"model": "tts-plain", "input": TEXT, "voice": "carol"},
        timeout=120,
    )
    assert plain.status_code == 400
    assert plain.json()["error"]["message"].endswith("voices: alloy, default, echo)")


def test_the_default_voice_is_genais_own(live: LiveServer, pipeline: Any) -> None:
    response = speak(live, input=TEXT, response_format="wav")
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    samples, _ = _wav(response.content)
    expected, _ = direct(pipeline, TEXT, None)
    assert np.abs(samples - np.clip(expected, -1, 1)).max() <= 2 / 32767
    named = _wav(speak(live, input=TEXT, voice="default", response_format="wav").content)[0]
    assert np.array_equal(named, samples)


def test_long_input_is_served_sentence_by_sentence(live: LiveServer, pipeline: Any) -> None:
    response = speak(live, input=" ".join(SENTENCES), voice="alloy", response_format="wav")
    samples, _ = _wav(response.content)
    parts = [direct(pipeline, sentence, "alloy")[0] for sentence in SENTENCES]
    assert samples.size == sum(p.size for p in parts)
    assert np.abs(samples - np.clip(np.concatenate(parts), -1, 1)).max() <= 2 / 32767


def test_concurrent_requests_each_get_their_own_audio(live: LiveServer, pipeline: Any) -> None:
    asks = [(text, name) for text in SENTENCES for name in ("alloy", "echo")]
    with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        futures = [
            pool.submit(speak, live, input=text, voice=name, response_format="wav")
            for text, name in asks
        ]
        answers = [_wav(future.result().content)[0] for future in futures]
    for (text, name), samples in zip(asks, answers, strict=True):
        expected = direct(pipeline, text, name)[0]
        assert samples.size == expected.size
        assert np.abs(samples - np.clip(expected, -1, 1)).max() <= 2 / 32767


@pytest.mark.parametrize(
    ("audio_format", "content_type"),
    [("mp3", "audio/mpeg"), ("opus", "audio/ogg"), ("aac", "audio/aac"), ("flac", "audio/flac")],
)
def test_every_format_comes_back_as_audio(
    client: openai.OpenAI, pipeline: Any, audio_format: Any, content_type: str
) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts", voice="alloy", input=TEXT, response_format=audio_format
    ) as raw:
        assert raw.headers["content-type"] == content_type
        samples, rate, _ = _decode(raw.read())
    seconds = direct(pipeline, TEXT, "alloy")[0].size / SAMPLE_RATE
    assert seconds <= samples.size / rate < seconds + 0.15


def test_pcm_and_speed(live: LiveServer, pipeline: Any) -> None:
    expected = direct(pipeline, TEXT, "alloy")[0].size
    pcm = speak(live, input=TEXT, voice="alloy", response_format="pcm")
    assert pcm.headers["content-type"] == "audio/pcm"
    assert abs(len(pcm.content) / 2 - expected * PCM_RATE / SAMPLE_RATE) <= 64
    fast = _wav(speak(live, input=TEXT, voice="alloy", response_format="wav", speed=2.0).content)
    assert fast[0].size / expected == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"input": ""}, "input", "input"),
        ({"input": "x" * (MAX_CHARS + 1)}, "input", "OV_MAX_SPEECH_CHARS"),
        ({"input": "hi", "voice": "nova"}, "voice", "alloy, carol, default, echo"),
        ({"input": "hi", "speed": 4.5}, "speed", "speed"),
        ({"input": "hi", "response_format": "ogg"}, "response_format", "response_format"),
        ({"input": "hi", "instructions": "Speak softly"}, "instructions", "instructions"),
        ({"input": "hi", "model": "tiny-int8"}, "model", "a generative model"),
    ],
)
def test_bad_input_is_a_400_and_the_engine_answers_after(
    live: LiveServer, body: dict[str, Any], param: str, needle: str
) -> None:
    error = error_of(speak(live, **body), 400)
    assert error["param"] == param and needle in error["message"], error
    assert speak(live, input="ok", voice="echo", response_format="wav").status_code == 200


def test_unknown_model_is_a_404(live: LiveServer) -> None:
    started = time.monotonic()
    error_of(speak(live, model="nope", input="hi"), 404)
    assert time.monotonic() - started < 5


def test_card_and_litellm_say_audio_speech(live: LiveServer) -> None:
    from ov_llm_server.litellm import model_info
    from ov_llm_server.protocol import ModelCard

    cards = {c["id"]: c for c in httpx.get(f"{live.v1}/models", timeout=60).json()["data"]}
    card = cards["tts"]
    assert card["mode"] == "audio_speech" and card["device"] == "CPU"
    assert "OV_AUDIO_DEVICE" in card["device_reason"]
    info = model_info(ModelCard.model_validate(card))
    assert info["mode"] == "audio_speech"
    assert info["supported_endpoints"] == ["/v1/audio/speech"]


def _engine(live: LiveServer) -> dict[str, Any]:
    (engine,) = httpx.get(f"{live.base_url}/health").json()["loaded_models"]
    assert isinstance(engine, dict)
    return engine


def test_a_text_that_breaks_the_model_is_refused_alone(live: LiveServer) -> None:
    speak(live, input="ok", voice="alloy")
    before = _engine(live)
    error = error_of(speak(live, input=f"Fine. This {POISON} breaks it.", voice="alloy"), 400)
    assert error["code"] == "poison_request" and error["param"] == "input"
    assert speak(live, input="ok", voice="alloy").status_code == 200
    assert _engine(live)["pid"] == before["pid"]  # the model was not at fault


def test_a_failed_step_ends_the_request_and_the_engine_comes_back(
    live: LiveServer, faults: Path
) -> None:
    speak(live, input="ok", voice="alloy")
    before = _engine(live)
    faults.write_text("step", encoding="utf-8")
    response = speak(live, input=TEXT, voice="alloy")
    assert response.status_code in (500, 503), response.text
    assert "step" in response.json()["error"]["message"] or "restarting" in response.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        after = _engine(live)
        if after["state"] == "ready" and after["restarts"] == before["restarts"] + 1:
            break
        time.sleep(0.1)
    assert after["pid"] != before["pid"]
    assert speak(live, input="ok", voice="alloy").status_code == 200


@requires_litellm
def test_through_litellm(
    live: LiveServer, pipeline: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = litellm_config(live, "--api-base", live.v1)
    with running_proxy(config, tmp_path_factory.mktemp("litellm")) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.key, max_retries=0)
        response = client.audio.speech.create(
            model="tts", voice="echo", input=TEXT, response_format="wav"
        )
        samples, rate = _wav(response.read())
    expected, _ = direct(pipeline, TEXT, "echo")
    assert rate == SAMPLE_RATE and samples.size == expected.size
    assert np.abs(samples - np.clip(expected, -1, 1)).max() <= 2 / 32767
