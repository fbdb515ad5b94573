"""Image input in chat: a vision-language model (``vlm`` engine kind) on the tiny LLaVA.

The tiny LLaVA (tests/tiny_vlm.py) is converted by ``ov-convert-model``'s own workflow and
served by a real server whose engine runs GenAI's continuous-batching pipeline on its three
IRs. Its greedy answers are compared with transformers' on the same weights, token for token;
bad images are refused with 400s naming the part, and the engine answers afterwards.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from litellm_proxy import litellm_config, requires_litellm, running_proxy
from live_server import LiveServer, error_of, write_registry
from ov_llm_server.cli import main
from ov_llm_server.engine.messages import Image
from ov_llm_server.errors import APIError
from ov_llm_server.protocol import ChatMessage
from ov_llm_server.serving.images import check_images, decode_images
from ov_llm_server.settings import Settings
from tiny_vlm import draw_image, ensure_tiny_vlm, reference_ids

MAX_IMAGES = 3
MAX_IMAGE_BYTES = 100_000
MAX_IMAGE_PIXELS = 400 * 400
TOKENS = 8
QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def tiny_vlm() -> dict[str, Path]:
    return ensure_tiny_vlm()


@pytest.fixture(scope="module")
def vlm_server(server_factory: Any, tiny_vlm: dict[str, Path], tiny_ir_int8: Path) -> LiveServer:
    registry = {
        # f32 whatever the CPU: a bf16 CPU would round differently from transformers.
        "vlm": {
            "path": str(tiny_vlm["ir"]),
            "task": "image-text-to-text",
            "inference_precision": "f32",
        },
        "text": {"path": str(tiny_ir_int8), "task": "text-generation-with-past"},
    }
    return server_factory(
        registry,
        OV_MAX_IMAGES=str(MAX_IMAGES),
        OV_MAX_IMAGE_BYTES=str(MAX_IMAGE_BYTES),
        OV_MAX_IMAGE_PIXELS=str(MAX_IMAGE_PIXELS),
    )


def data_url(image: Any, fmt: str = "PNG", **save: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    media = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}[fmt]
    return f"data:image/{media};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def chat(server: LiveServer, messages: list[dict[str, Any]], **fields: Any) -> httpx.Response:
    body = {"model": "vlm", "messages": messages, "max_tokens": TOKENS, "temperature": 0}
    return httpx.post(f"{server.v1}/chat/completions", json={**body, **fields}, timeout=120)


def reference(hf: Path, messages: list[dict[str, Any]], images: list[Any]) -> tuple[str, int]:
    """transformers' greedy answer as text (the server's completion_tokens says how many)."""
    from transformers import AutoTokenizer

    # The processor's chat template reads image parts as {"type": "image"}.
    hf_messages = [
        {
            **m,
            "content": [{"type": "image"} if p["type"] == "image_url" else p for p in m["content"]]
            if isinstance(m["content"], list)
            else m["content"],
        }
        for m in messages
    ]
    ids, prompt_length = reference_ids(hf, hf_messages, images, TOKENS)
    assert len(ids) == TOKENS  # a random model never says its end token this early
    # The server's detokenizer drops special tokens (the random model says <image> at times).
    decoded: str = AutoTokenizer.from_pretrained(str(hf)).decode(ids, skip_special_tokens=True)
    return decoded, prompt_length


# ---------------------------------------------------------------- the converter and the card


def test_converter_detects_the_vision_task(tiny_vlm: dict[str, Path]) -> None:
    registry = json.loads(tiny_vlm["registry"].read_text(encoding="utf-8"))
    assert registry["models"]["tiny-vlm-fp16"]["task"] == "image-text-to-text"
    # GenAI reads the image preprocessing from this file only; transformers 5 writes none.
    preprocessor = json.loads((tiny_vlm["ir"] / "preprocessor_config.json").read_text())
    assert preprocessor["crop_size"] == {"height": 336, "width": 336}


def test_models_and_litellm_config_declare_vision(
    vlm_server: LiveServer,
    tiny_vlm: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cards = {c["id"]: c for c in httpx.get(f"{vlm_server.v1}/models", timeout=30).json()["data"]}
    assert cards["vlm"]["mode"] == "chat"
    assert "vision" in cards["vlm"]["capabilities"]
    assert "vision" not in cards["text"]["capabilities"]
    assert cards["vlm"]["context_length"] == 4096  # the language model's, from text_config

    import yaml

    path = tmp_path / "registry.json"
    write_registry(path, {"vlm": {"path": str(tiny_vlm["ir"]), "task": "image-text-to-text"}})
    monkeypatch.setenv("OV_REGISTRY_PATH", str(path))
    monkeypatch.delenv("OV_MODEL_PATH", raising=False)
    main(["litellm-config", "--api-base", "http://n1:8000/v1"])
    config = yaml.safe_load(capsys.readouterr().out)
    info = config["model_list"][0]["model_info"]
    assert info["mode"] == "chat"
    assert info["supports_vision"] is True


def test_verify_loads_the_vision_model_in_its_own_pipeline(tiny_vlm: dict[str, Path]) -> None:
    from ov_llm_server.convert.workflow import Layout, verify_all

    registry = tiny_vlm["registry"]
    layout = Layout(models_dir=registry.parent.parent, registry_path=registry)
    [check] = verify_all(layout, load=True, device="CPU")
    assert check.problems == []


# ---------------------------------------------------------------- answers against transformers


def test_greedy_answer_on_an_image_equals_transformers(
    vlm_server: LiveServer, tiny_vlm: dict[str, Path]
) -> None:
    image = draw_image()
    messages = [user(image_part(data_url(image)), text(QUESTION))]
    response = chat(vlm_server, messages)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected, prompt_length = reference(tiny_vlm["hf"], messages, [image])
    assert answer["choices"][0]["message"]["content"] == expected
    assert answer["choices"][0]["finish_reason"] == "length"
    # GenAI's count: the text tokens, 576 patch tokens for the image and its newline.
    assert answer["usage"]["prompt_tokens"] == prompt_length
    assert answer["usage"]["completion_tokens"] == TOKENS


def test_two_images_in_order_across_messages_and_a_resized_one(
    vlm_server: LiveServer, tiny_vlm: dict[str, Path]
) -> None:
    first, second = draw_image(420, 360), draw_image(shift=60)
    messages = [
        user(text("Compare"), image_part(data_url(first, "JPEG", quality=95))),
        {"role": "assistant", "content": "Hello!"},
        user(image_part(data_url(second, "WEBP", lossless=True)), text(QUESTION)),
    ]
    response = chat(vlm_server, messages)
    assert response.status_code == 200, response.text
    # transformers gets the files the server got (JPEG is lossy), decoded the same way.
    decoded = [
        decoded_image(messages[0]["content"][1]["image_url"]["url"]),
        decoded_image(messages[2]["content"][0]["image_url"]["url"]),
    ]
    expected, prompt_length = reference(tiny_vlm["hf"], messages, decoded)
    assert response.json()["choices"][0]["message"]["content"] == expected
    assert response.json()["usage"]["prompt_tokens"] == prompt_length


def decoded_image(url: str) -> Any:
    from PIL import Image as PILImage

    return PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_a_text_only_request_to_a_vision_model_is_chat(
    vlm_server: LiveServer, tiny_vlm: dict[str, Path]
) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    response = chat(vlm_server, messages)
    assert response.status_code == 200, response.text
    expected, prompt_length = reference(tiny_vlm["hf"], [user(text("Say hello."))], [])
    assert response.json()["choices"][0]["message"]["content"] == expected
    assert response.json()["usage"]["prompt_tokens"] == prompt_length


def test_completions_take_a_text_prompt_not_token_ids(vlm_server: LiveServer) -> None:
    url = f"{vlm_server.v1}/completions"
    body = {"model": "vlm", "max_tokens": TOKENS, "temperature": 0}
    response = httpx.post(url, json={**body, "prompt": "Say hello."}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == TOKENS
    error = error_of(httpx.post(url, json={**body, "prompt": [5, 6, 7]}, timeout=60), 400)
    assert (error["param"], error["code"]) == ("prompt", "unsupported_value")


def test_openai_sdk_with_an_image_part_streamed_and_whole(vlm_server: LiveServer) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=vlm_server.v1, api_key="none", max_retries=0)
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": QUESTION},
                {
                    "type": "image_url",
                    "image_url": {"url": data_url(draw_image()), "detail": "low"},
                },
            ],
        }
    ]
    whole = client.chat.completions.create(
        model="vlm", messages=messages, max_tokens=TOKENS, temperature=0
    )
    stream = client.chat.completions.create(
        model="vlm",
        messages=messages,
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens > 577
    # A stop sequence cuts the answer where it appears.
    cut = whole.choices[0].message.content[2:4]
    stopped = client.chat.completions.create(
        model="vlm", messages=messages, max_tokens=TOKENS, temperature=0, stop=[cut]
    )
    content = whole.choices[0].message.content
    assert stopped.choices[0].message.content == content[: content.index(cut)]
    assert stopped.choices[0].finish_reason == "stop"


@requires_litellm
def test_an_image_through_litellm_gets_the_direct_answer(
    vlm_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """litellm-config's deployment of a vision model: LiteLLM passes the image part through."""
    from openai import OpenAI

    messages = [user(text(QUESTION), image_part(data_url(draw_image())))]
    direct = chat(vlm_server, messages, max_tokens=TOKENS, temperature=0)
    assert direct.status_code == 200, direct.text
    config = litellm_config(vlm_server, "--api-base", vlm_server.v1)
    assert "supports_vision: true" in config
    with running_proxy(config, tmp_path_factory.mktemp("litellm")) as proxy:
        client = OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.key, max_retries=0)
        through: Any = client.chat.completions.create(
            model="vlm",
            messages=messages,
            max_tokens=TOKENS,
            temperature=0,  # type: ignore[arg-type]
        )
    assert through.choices[0].message.content == direct.json()["choices"][0]["message"]["content"]


def test_concurrent_image_requests_each_get_their_own_answer(
    vlm_server: LiveServer,
) -> None:
    conversations = [
        [user(image_part(data_url(draw_image(shift=shift))), text(QUESTION))]
        for shift in (0, 40, 80, 120)
    ]
    alone = [chat(vlm_server, c).json()["choices"][0]["message"]["content"] for c in conversations]
    assert len(set(alone)) > 1  # the images make a difference
    with ThreadPoolExecutor(len(conversations)) as pool:
        together = list(pool.map(lambda c: chat(vlm_server, c), conversations))
    assert [r.json()["choices"][0]["message"]["content"] for r in together] == alone


def test_the_responses_api_takes_input_image_parts(vlm_server: LiveServer) -> None:
    url = data_url(draw_image())
    chat_answer = chat(vlm_server, [user(text(QUESTION), image_part(url))]).json()
    content = [{"type": "input_text", "text": QUESTION}, {"type": "input_image", "image_url": url}]
    body = {
        "model": "vlm",
        "input": [{"role": "user", "content": content}],
        "max_output_tokens": TOKENS,
        "temperature": 0,
    }
    response = httpx.post(f"{vlm_server.v1}/responses", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (
        answer["output"][-1]["content"][0]["text"]
        == (chat_answer["choices"][0]["message"]["content"])
    )
    assert answer["usage"]["input_tokens"] == chat_answer["usage"]["prompt_tokens"]
    bad = {**body, "input": [{"role": "user", "content": [{"type": "input_image"}]}]}
    error = error_of(httpx.post(f"{vlm_server.v1}/responses", json=bad, timeout=30), 400)
    assert (error["param"], error["code"]) == ("input", "invalid_image")


def test_the_messages_api_takes_image_blocks(vlm_server: LiveServer) -> None:
    from anthropic import Anthropic

    url = data_url(draw_image())
    chat_answer = chat(vlm_server, [user(text(QUESTION), image_part(url))]).json()
    client = Anthropic(base_url=vlm_server.base_url, api_key="none", max_retries=0)
    source: Any = {"type": "base64", "media_type": "image/png", "data": url.split(",", 1)[1]}
    message = client.messages.create(
        model="vlm",
        max_tokens=TOKENS,  # greedy: the model's generation_config.json samples not
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": QUESTION},
                    {"type": "image", "source": source},
                ],
            }
        ],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == chat_answer["choices"][0]["message"]["content"]
    assert message.usage.input_tokens == chat_answer["usage"]["prompt_tokens"]


def test_a_killed_vision_engine_is_replaced_and_answers_the_same(vlm_server: LiveServer) -> None:
    messages = [user(image_part(data_url(draw_image())), text(QUESTION))]
    before = chat(vlm_server, messages).json()["choices"][0]["message"]["content"]

    def engine() -> dict[str, Any]:
        health = httpx.get(f"{vlm_server.base_url}/health", timeout=10).json()
        return next(m for m in health["loaded_models"] if m["name"] == "vlm")

    killed = engine()
    assert killed["kind"] == "vlm"
    os.kill(killed["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while (response := chat(vlm_server, messages)).status_code != 200:
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "the engine was not replaced in 120 s"
        time.sleep(0.5)
    assert response.json()["choices"][0]["message"]["content"] == before
    assert engine()["pid"] != killed["pid"]
    assert engine()["restarts"] == killed["restarts"] + 1


# ---------------------------------------------------------------- bad input


def noise_png(width: int, height: int) -> str:
    import numpy as np
    from PIL import Image as PILImage

    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return data_url(PILImage.fromarray(pixels))


BAD_IMAGES = {
    "corrupt base64": ("data:image/png;base64,iVBORw0KGgo!!!", "invalid_image"),
    "not an image": (
        "data:image/png;base64," + base64.b64encode(b"just some text, no pixels").decode(),
        "invalid_image",
    ),
    "truncated png": (data_url(draw_image())[:400], "invalid_image"),
    "not base64": ("data:image/png,rawbytes", "invalid_image"),
    "http url": ("http://127.0.0.1:1/cat.png", "image_url_not_supported"),
    "too many bytes": (noise_png(300, 300), "image_too_large"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_a_bad_image_is_a_400_naming_its_part(vlm_server: LiveServer, case: str) -> None:
    url, code = BAD_IMAGES[case]
    response = chat(vlm_server, [user(text(QUESTION), image_part(url))])
    error = error_of(response, 400)
    assert error["param"] == "messages.0.content.1.image_url"
    assert error["code"] == code


def test_image_limits_and_a_text_model_refuse_with_400s_and_the_engine_answers_after(
    vlm_server: LiveServer,
) -> None:
    url = data_url(draw_image())
    too_many = [user(*[image_part(url)] * (MAX_IMAGES + 1), text(QUESTION))]
    error = error_of(chat(vlm_server, too_many), 400)
    assert (error["param"], error["code"]) == ("messages", "too_many_images")

    big = data_url(draw_image(500, 400))  # few bytes, too many pixels
    error = error_of(chat(vlm_server, [user(image_part(big))]), 400)
    assert (error["param"], error["code"]) == ("messages.0.content.0.image_url", "image_too_large")
    assert "500x400" in error["message"]

    error = error_of(chat(vlm_server, [user(image_part(url))], model="text"), 400)
    assert (error["param"], error["code"]) == ("messages.0.content.0", "images_unsupported")

    # Image tags in a client's text that no image matches: GenAI refuses the request alone.
    error = error_of(chat(vlm_server, [user(text("<image> what is this?"))]), 400)
    assert (error["param"], error["code"]) == ("messages", "invalid_prompt")
    tagged = [user(text("<ov_genai_image_3>"), image_part(url))]
    error = error_of(chat(vlm_server, tagged), 400)
    assert (error["param"], error["code"]) == ("messages", "invalid_image")

    good = chat(vlm_server, [user(image_part(url), text(QUESTION))])
    assert good.status_code == 200, good.text
    assert good.json()["usage"]["completion_tokens"] == TOKENS


# ---------------------------------------------------------------- the engine's runner


def test_the_runner_counts_image_tokens_before_generating(tiny_vlm: dict[str, Path]) -> None:
    """In process, on the real pipeline: what an image adds to the prompt is learnt at load,
    acknowledged at once, and bounds the prompt against the context (4096 tokens)."""
    from ov_llm_server.engine.core.vision import VisionRunner
    from ov_llm_server.engine.messages import EngineConfig, Generate, Output, SamplingParams

    runner = VisionRunner(tiny_vlm["ir"], EngineConfig(device="CPU", inference_precision="f32"))
    assert runner.image_tokens == 576  # LLaVA: the tag becomes 576 patch tokens and a newline
    image = Image(336, 336, draw_image().tobytes())

    def request(rid: int, images: int) -> Generate:
        content = [{"type": "image"}] * images + [{"type": "text", "text": QUESTION}]
        messages = [{"role": "user", "content": content}]
        return Generate(rid, SamplingParams(TOKENS), messages=messages, images=[image] * images)

    refused = runner.add(request(1, 8))
    assert isinstance(refused, Output)
    assert (refused.finish, refused.code) == ("error", "context_length_exceeded")
    accepted = runner.add(request(2, 2))
    assert isinstance(accepted, Output) and accepted.finish is None
    outputs: list[Any] = []
    while runner.busy:
        outputs += runner.step()
    assert outputs[-1].finish == "length"
    assert outputs[-1].prompt_tokens == accepted.prompt_tokens  # GenAI's count agrees


# ---------------------------------------------------------------- decoding (pure)


def test_formats_decode_to_the_same_pixels_and_a_gif_to_its_first_frame() -> None:
    from PIL import Image as PILImage

    settings = Settings(max_image_pixels=MAX_IMAGE_PIXELS)
    image = draw_image()
    first = image.quantize(colors=8).convert("RGB")  # GIF keeps a palette: compare on one
    second = PILImage.new("RGB", image.size, "green")
    gif = io.BytesIO()
    first.save(gif, format="GIF", save_all=True, append_images=[second])
    gif_url = f"data:image/gif;base64,{base64.b64encode(gif.getvalue()).decode()}"
    messages = [
        ChatMessage.model_validate(
            user(image_part(data_url(image)), image_part(data_url(image, "WEBP", lossless=True)))
        ),
        ChatMessage.model_validate(user(text("and"), image_part(gif_url))),
    ]
    check_images(messages, settings)
    decoded = decode_images(messages, settings)
    expected = image.tobytes()
    assert [d.rgb == expected for d in decoded[:2]] == [True, True]
    assert decoded[2] == Image(336, 336, first.tobytes())


def test_the_pixel_limit_is_checked_before_the_pixels_are_decoded() -> None:
    """A few hundred bytes of PNG may declare a huge image: refused by its header."""
    from PIL import Image as PILImage

    bomb = io.BytesIO()
    PILImage.new("1", (4000, 4000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 10_000
    url = f"data:image/png;base64,{base64.b64encode(bomb.getvalue()).decode()}"
    messages = [ChatMessage.model_validate(user(image_part(url)))]
    with pytest.raises(APIError) as refused:
        decode_images(messages, Settings(max_image_pixels=MAX_IMAGE_PIXELS))
    assert refused.value.code == "image_too_large"
    assert "4000x4000" in refused.value.message


# ---------------------------------------------------------------- fetching image URLs (opt-in)


@pytest.fixture(scope="module")
def image_site() -> Iterator[str]:
    """A real HTTP server on loopback: an image, a redirect to it, a loop, a slow answer."""
    png = io.BytesIO()
    draw_image().save(png, format="PNG")
    body = png.getvalue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/image.png":
                self._send(200, body)
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/image.png")
                self.end_headers()
            elif self.path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
            elif self.path == "/slow":
                time.sleep(2)
                self._send(200, body)
            else:
                self._send(404, b"no")

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()


def fetched(url: str, **settings: Any) -> list[Image]:
    messages = [ChatMessage.model_validate(user(image_part(url)))]
    check_images(messages, Settings(**settings))
    return decode_images(messages, Settings(**settings))


def refusal(url: str, **settings: Any) -> str | None:
    with pytest.raises(APIError) as refused:
        fetched(url, **settings)
    assert refused.value.status == 400
    assert refused.value.param == "messages.0.content.0.image_url"
    return refused.value.code


def test_image_urls_are_fetched_only_when_enabled_and_from_public_addresses(
    image_site: str,
) -> None:
    assert refusal(f"{image_site}/image.png") == "image_url_not_supported"
    assert refusal(f"{image_site}/image.png", image_fetch=True) == "image_url_forbidden"
    for private in ("http://169.254.169.254/latest", "http://10.1.2.3/x.png", "http://[::1]/"):
        assert refusal(private, image_fetch=True) == "image_url_forbidden"
    allowed = {"image_fetch": True, "image_fetch_private": True}
    [image] = fetched(f"{image_site}/image.png", **allowed)
    assert image == Image(336, 336, draw_image().tobytes())
    assert fetched(f"{image_site}/moved", **allowed) == [image]


def test_a_fetch_is_bounded_in_bytes_time_and_redirects(image_site: str) -> None:
    allowed: dict[str, Any] = {"image_fetch": True, "image_fetch_private": True}
    assert refusal(f"{image_site}/image.png", max_image_bytes=1024, **allowed) == (
        "image_too_large"
    )
    assert refusal(f"{image_site}/missing.png", **allowed) == "image_fetch_failed"
    assert refusal(f"{image_site}/loop", **allowed) == "image_fetch_failed"
    started = time.monotonic()
    assert refusal(f"{image_site}/slow", image_fetch_seconds=0.5, **allowed) == (
        "image_fetch_failed"
    )
    assert time.monotonic() - started < 1.9
