"""The images of a chat request to a vision model: ``image_url`` content parts, checked and
decoded on the HTTP side, so that the engine gets nothing but RGB pixels it can trust.

Every cost a client controls is bounded before it is paid: the number of images
(``OV_MAX_IMAGES``), each file's size before its base64 is decoded (``OV_MAX_IMAGE_BYTES``),
and its pixels as its header declares them, before the pixels are decoded
(``OV_MAX_IMAGE_PIXELS``: a small file may declare a huge image). ``data:`` URLs are taken;
``http(s)`` URLs only when the operator enables fetching (``image_fetch.py`` says how it is
bounded), since a URL lets a client make the server reach an address of its choosing. A
file that Pillow cannot read as PNG, JPEG, WebP or GIF (its first frame) is a 400 naming its
part. The model resizes what it gets to what it takes (GenAI's preprocessing), so the pixels
go to the engine as they are.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Sequence
from typing import Any

from PIL import Image as PILImage

from .. import errors
from ..engine.messages import Image
from ..protocol import ChatMessage, ContentPart
from ..settings import Settings
from .image_fetch import fetch_image

IMAGE_PART = "image_url"
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
_DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*),", re.ASCII)


def image_parts(messages: Sequence[ChatMessage]) -> list[tuple[str, ContentPart]]:
    """Every image part of the conversation in order, with the request field it is."""
    found = []
    for i, message in enumerate(messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.type == IMAGE_PART:
                    found.append((f"messages.{i}.content.{j}", part))
    return found


def check_images(messages: Sequence[ChatMessage], settings: Settings) -> None:
    """Refusals that cost nothing (400s): too many images, a URL this server does not fetch,
    a file too large by its encoded length."""
    parts = image_parts(messages)
    if len(parts) > settings.max_images:
        raise errors.bad_request(
            f"Too many images ({len(parts)}); at most {settings.max_images} are accepted "
            "in one request",
            param="messages",
            code="too_many_images",
        )
    for param, part in parts:
        _payload(part, param, settings, fetch=False)


def decode_images(messages: Sequence[ChatMessage], settings: Settings) -> list[Image]:
    """The request's images, fetched (when enabled) and decoded, in order (blocking and CPU
    work: run it off the event loop)."""
    return [
        _decode(_payload(part, param, settings, fetch=True), f"{param}.image_url", settings)
        for param, part in image_parts(messages)
    ]


def vision_content(message: ChatMessage) -> list[dict[str, Any]]:
    """A message's content as a vision model's chat template reads it: a list of parts, an
    ``{"type": "image"}`` where each image was (the template writes the model's own image
    tag there); string content becomes one text part, as Hugging Face processors do."""
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}]
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.type == IMAGE_PART:
            parts.append({"type": "image"})
        elif part.type == "text":
            parts.append({"type": "text", "text": part.text or ""})
    return parts


def _payload(part: ContentPart, param: str, settings: Settings, *, fetch: bool) -> bytes:
    """The image file a part carries, refused by its encoded size before it is decoded; an
    enabled ``http(s)`` URL is fetched only with ``fetch`` (b"" without)."""
    url = _url(part)
    if url is None:
        raise errors.bad_request(
            "An image_url part needs image_url.url (a data: URL)", param=f"{param}.image_url"
        )
    param = f"{param}.image_url"
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        if settings.image_fetch:
            return fetch_image(url, param, settings) if fetch else b""
        raise errors.bad_request(
            "This server does not fetch image URLs (OV_IMAGE_FETCH is off); send the image "
            "inline as a data: URL (data:image/png;base64,...)",
            param=param,
            code="image_url_not_supported",
        )
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match.group("params").lower():
        raise errors.bad_request(
            "An image must be a base64 data: URL (data:image/png;base64,...)",
            param=param,
            code="invalid_image",
        )
    encoded = url[match.end() :]
    # Four base64 characters carry three bytes: the decoded size, known before decoding.
    if len(encoded) * 3 // 4 > settings.max_image_bytes + 2:
        raise errors.bad_request(
            f"The image is larger than this server's limit of {settings.max_image_bytes} bytes",
            param=param,
            code="image_too_large",
        )
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise errors.bad_request(
            "The image's data: URL is not valid base64", param=param, code="invalid_image"
        ) from None


def _url(part: ContentPart) -> str | None:
    image_url = part.image_url
    if isinstance(image_url, str):  # some clients send the URL itself
        return image_url
    if isinstance(image_url, dict) and isinstance(image_url.get("url"), str):
        return str(image_url["url"])
    return None


def _decode(data: bytes, param: str, settings: Settings) -> Image:
    if len(data) > settings.max_image_bytes:
        raise errors.bad_request(
            f"The image is larger than this server's limit of {settings.max_image_bytes} bytes",
            param=param,
            code="image_too_large",
        )
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns (or raises) by its global limit; ours is below.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
                if width * height > settings.max_image_pixels:
                    raise errors.bad_request(
                        f"The image has {width}x{height} pixels, more than this server's "
                        f"limit of {settings.max_image_pixels}",
                        param=param,
                        code="image_too_large",
                    )
                image.seek(0)  # an animation's first frame
                rgb = image.convert("RGB")
    except errors.APIError:
        raise
    except PILImage.DecompressionBombError:  # Pillow's own limit, if an operator set ours above
        raise errors.bad_request(
            "The image has more pixels than this server decodes",
            param=param,
            code="image_too_large",
        ) from None
    except (OSError, ValueError, SyntaxError):
        raise errors.bad_request(
            "The image cannot be read: it is not a valid PNG, JPEG, WebP or GIF file",
            param=param,
            code="invalid_image",
        ) from None
    return Image(rgb.width, rgb.height, rgb.tobytes())
