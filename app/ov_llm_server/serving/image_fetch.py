"""Fetching an ``http(s)`` image URL of a chat request, when the operator enables it
(``OV_IMAGE_FETCH``; off by default, and then such a URL is a 400).

A URL from a client makes the server a client of whatever it names, so every hop (the URL
and each redirect, at most ``MAX_REDIRECTS``) must resolve to public addresses only, unless
``OV_IMAGE_FETCH_PRIVATE`` allows private ones (a homelab's own file server): no loopback,
private, link-local (cloud metadata), multicast or reserved address. The body is read up to
``OV_MAX_IMAGE_BYTES`` (a larger ``Content-Length`` is refused before reading), and the
fetch, redirects included, ends after about ``OV_IMAGE_FETCH_SECONDS`` (each read also times
out at that). Every failure is a 400 naming the part. What remains: the address is checked
when this resolves the name and httpx resolves it again to connect, so a DNS server that
answers differently within that moment could still steer the connection.

Runs in a worker thread (the chat request's ``work``), never on the event loop.
"""

from __future__ import annotations

import ipaddress
import socket
import time

import httpx

from .. import errors
from ..settings import Settings

MAX_REDIRECTS = 3


def fetch_image(url: str, param: str, settings: Settings) -> bytes:
    """The file at ``url``: an APIError (400) for anything this refuses or cannot get."""
    deadline = time.monotonic() + settings.image_fetch_seconds
    try:
        with httpx.Client(timeout=settings.image_fetch_seconds, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                _check_address(url, param, settings)
                with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    return _body(response, param, settings, deadline)
    except httpx.HTTPError as exc:
        raise _failed(f"The image URL cannot be fetched ({type(exc).__name__})", param) from None
    raise _failed(f"The image URL redirects more than {MAX_REDIRECTS} times", param)


def _check_address(url: str, param: str, settings: Settings) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise _failed("The image URL is not a valid URL", param) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _failed("The image URL must be an http or https URL", param)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(parsed.host, port)}
    except (OSError, UnicodeError):
        raise _failed(f"The image URL's host {parsed.host!r} does not resolve", param) from None
    if settings.image_fetch_private:
        return
    for address in addresses:
        if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
            raise errors.bad_request(
                f"The image URL's host {parsed.host!r} is a private address, which this "
                "server does not fetch",
                param=param,
                code="image_url_forbidden",
            )


def _body(response: httpx.Response, param: str, settings: Settings, deadline: float) -> bytes:
    if response.status_code != 200:
        raise _failed(f"The image URL answered HTTP {response.status_code}", param)
    limit = settings.max_image_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, param)
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            raise _too_large(limit, param)
        if time.monotonic() > deadline:
            raise _failed(
                f"The image URL took longer than {settings.image_fetch_seconds:g}s", param
            )
    return bytes(data)


def _too_large(limit: int, param: str) -> errors.APIError:
    return errors.bad_request(
        f"The image is larger than this server's limit of {limit} bytes",
        param=param,
        code="image_too_large",
    )


def _failed(message: str, param: str) -> errors.APIError:
    return errors.bad_request(message, param=param, code="image_fetch_failed")
