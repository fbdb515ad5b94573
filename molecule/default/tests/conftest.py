"""Shared helpers of the Molecule tests: HTTP through the container, the journal on failure."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

SERVICE = "ov-server"
BASE_URL = "http://127.0.0.1:8000"

# Runs inside the container with its system python3, so that the tests reach
# the service on the container's loopback, where it listens.
_HTTP_CLIENT = """
import json, sys, urllib.error, urllib.request
method, url, body, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
data = body.encode() if body else None
request = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
print(json.dumps({"status": status, "body": text}))
"""


def http(host: Any, method: str, path: str, payload: Any = None, timeout: float = 60) -> tuple[int, Any]:
    """Send one request to the service from inside the container: (status, parsed JSON body)."""
    body = json.dumps(payload) if payload is not None else ""
    command = " ".join(
        shlex.quote(part)
        for part in ("python3", "-c", _HTTP_CLIENT, method, BASE_URL + path, body, str(timeout))
    )
    result = json.loads(host.check_output(command))
    try:
        parsed = json.loads(result["body"])
    except ValueError:
        parsed = result["body"]
    return result["status"], parsed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    host = getattr(item, "funcargs", {}).get("host")
    if report.when == "call" and report.failed and host is not None:
        journal = host.run(f"journalctl -u {SERVICE} --no-pager -n 80 -o short-iso")
        report.sections.append((f"journal of {SERVICE}", journal.stdout + journal.stderr))
