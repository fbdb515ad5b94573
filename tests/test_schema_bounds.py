"""Costs a client controls in structured output are bounded (issue 20).

Work is counted, not timed: :func:`calls` counts the Python calls a piece of code makes, so
an exponential walk shows whatever the machine's speed. The live test runs hostile schemas
through a real server and probes ``/health`` while they are in flight.
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from live_server import LiveServer, error_of
from ov_llm_server.engine.core.text import StopMatcher
from ov_llm_server.errors import APIError
from ov_llm_server.output import plan_output
from ov_llm_server.output.grammar import JsonGrammar
from ov_llm_server.output.schema import SchemaError, compile_schema, repair, validate
from ov_llm_server.protocol import MAX_STOP_CHARS, ChatCompletionRequest
from ov_llm_server.protocol_surface import CompletionRequest
from schema_strategies import JSON_VALUES, shared_part_schemas


class TooMuchWork(Exception):
    pass


def calls(run: Callable[[], object], cap: int) -> int:
    """How many Python (and C) functions ``run`` calls; :class:`TooMuchWork` past ``cap``."""
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1
            if count > cap:
                raise TooMuchWork(f"more than {cap} calls")

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return count


def doubling_chain(depth: int) -> dict[str, Any]:
    """Each level is the next one twice through allOf: 2**depth paths in about 70 bytes a level."""
    defs: dict[str, Any] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(depth)
    }
    defs[f"d{depth}"] = {"type": "object"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def branching_enum(depth: int, fanout: int = 3) -> dict[str, Any]:
    """An enum checked against anyOfs that share their options: fanout**depth paths."""
    refs = [[{"$ref": f"#/$defs/d{i + 1}"}] * fanout for i in range(depth)]
    defs: dict[str, Any] = {f"d{i}": {"anyOf": refs[i]} for i in range(depth)}
    defs[f"d{depth}"] = {"type": "integer"}
    return {"$defs": defs, "enum": ["x", "y", 3], "anyOf": [{"$ref": "#/$defs/d0"}]}


def size(value: Any) -> int:
    return len(json.dumps(value))


def compile_plan(schema: Any) -> None:
    """The model and the grammar, as a response_format (refusals are fine)."""
    try:
        builder = JsonGrammar()
        builder.grammar(builder.model(compile_schema(schema)))
    except SchemaError:
        pass


# ---------------------------------------------------------------- work, counted


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(schema=shared_part_schemas())
@example(schema=doubling_chain(30))
@example(schema=branching_enum(15))
def test_compile_work_grows_with_the_schema_not_with_its_paths(schema: Any) -> None:
    # The old walk took 700,000 calls for some of these 1.5 KB schemas and doubled per level.
    bound = 10_000 + 20 * size(schema)
    calls(lambda: compile_plan(schema), bound)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(schema=shared_part_schemas(), values=st.lists(JSON_VALUES, min_size=1, max_size=3))
@example(schema=branching_enum(15), values=["x", [1, 2], {"a": "x"}])
def test_checking_output_grows_with_the_schema_and_the_output(
    schema: Any, values: list[Any]
) -> None:
    try:
        model = compile_schema(schema)
    except SchemaError:
        return

    def check(value: Any) -> None:
        validate(model, value)
        repair(model, value)

    for value in values:
        calls(functools.partial(check, value), 10_000 + 20 * (size(schema) + size(value)))


def test_deep_output_is_refused_not_a_crash() -> None:
    nested = compile_schema(
        {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    )
    value: Any = []
    for _ in range(20_000):
        value = [value]
    problem = validate(nested, value)
    assert problem is not None and "too costly" in problem
    assert repair(nested, value) is value


def test_a_compile_past_its_deadline_is_a_400_naming_the_param() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": doubling_chain(12)}}
    tool = {"type": "function", "function": {"name": "f", "parameters": branching_enum(5)}}
    cases = (({"response_format": fmt}, "response_format"), ({"tools": [tool]}, "tools"))
    for extra, param in cases:
        request = ChatCompletionRequest.model_validate({**body, **extra})
        with pytest.raises(APIError) as err:
            plan_output(request, "", None, compile_seconds=1e-9)
        assert err.value.param == param and err.value.code == "schema_too_complex"
        assert "too complex" in err.value.message


def test_a_schema_is_compiled_once() -> None:
    schema = {"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(50)}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": fmt}
    )
    first = calls(lambda: plan_output(request, "", None), 10**7)
    again = calls(lambda: plan_output(request, "", None), 10**7)
    assert again < first / 5, (first, again)


# ---------------------------------------------------------------- patterns


_BACKTRACKING = """
import json, sys
from ov_llm_server.output.parsers import ToolCatalog
from ov_llm_server.output.schema import compile_schema
schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
catalog = ToolCatalog({"f": compile_schema(schema)})
bad = catalog.make_call({"name": "f", "arguments": {"s": "a" * 40 + "!"}})
good = catalog.make_call({"name": "f", "arguments": {"s": "a" * 40}})
print(json.dumps([bad is None, good is not None]))
"""


def test_a_backtracking_pattern_checks_free_tool_calls_in_linear_time() -> None:
    # Python's re takes 2**40 steps on this; in a real process, so a hang is a timeout.
    done = subprocess.run(
        [sys.executable, "-c", _BACKTRACKING], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, True]


@pytest.mark.parametrize(
    ("pattern", "value", "fits"),
    [
        ("^(a|aa)*$", "a" * 5000, True),
        ("^(a|aa)*$", "a" * 5000 + "b", False),
        ("(x+x+)+y", "x" * 3000, False),
        (r"^\d{3}-\d{4}$", "555-1234", True),
        ("ab", "xxabxx", True),
        ("^[^a]+$", "bcd", True),
    ],
)
def test_patterns_are_read_by_their_term(pattern: str, value: str, fits: bool) -> None:
    model = compile_schema({"type": "string", "pattern": pattern})
    assert (validate(model, value) is None) is fits
    calls(lambda: validate(model, value), 200 * len(value) + 10_000)


def test_patterns_the_term_cannot_read_are_refused_in_free_mode_too() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"s": {"pattern": "^(?=a)a+$"}}},
        },
    }
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
    )
    with pytest.raises(APIError) as err:
        plan_output(request, "", None)
    assert err.value.param == "tools" and "lookarounds" in err.value.message


# ---------------------------------------------------------------- stop sequences


@pytest.mark.parametrize("model", [ChatCompletionRequest, CompletionRequest])
def test_stop_sequences_have_a_length_limit(model: type[Any]) -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}], "prompt": "x"}
    assert model.model_validate({**base, "stop": ["a" * MAX_STOP_CHARS, "b"]})
    with pytest.raises(ValidationError) as exc:
        model.model_validate({**base, "stop": ["ok", "a" * (MAX_STOP_CHARS + 1)]})
    error = exc.value.errors()[0]
    assert error["loc"] == ("stop",) and f"at most {MAX_STOP_CHARS} characters" in error["msg"]


def test_stop_matching_costs_the_token_not_the_stop() -> None:
    # Text that keeps almost matching the longest stop: the old matcher compared every
    # start of the stop with the text's end on every token (MAX_STOP_CHARS**2 per token).
    stop = "a" * (MAX_STOP_CHARS - 1) + "b"
    matcher = StopMatcher([stop, "x" * MAX_STOP_CHARS, "yz", "q"])
    tokens = 2_000
    cost = calls(lambda: [matcher.push("a") for _ in range(tokens)], 10**7)
    assert cost < 40 * tokens, cost
    assert matcher.push("b") == ("", True)


@settings(max_examples=300, deadline=None)
@given(
    stops=st.lists(st.text("ab", min_size=1, max_size=6), min_size=1, max_size=4),
    deltas=st.lists(st.text("abc", max_size=5), max_size=12),
)
def test_stop_matching_cuts_where_the_first_stop_starts(
    stops: list[str], deltas: list[str]
) -> None:
    matcher = StopMatcher(stops)
    sent, text = "", ""
    for delta in deltas:
        text += delta
        out, stopped = matcher.push(delta)
        sent += out
        if stopped:
            assert sent == text[: min(i for i in (text.find(s) for s in stops) if i >= 0)]
            return
        assert not any(s in text for s in stops)
        assert text.startswith(sent) and len(text) - len(sent) < max(map(len, stops))
    assert sent + matcher.flush() == text


# ---------------------------------------------------------------- through a real server


def test_hostile_schemas_leave_the_server_responsive(server: LiveServer) -> None:
    chat = f"{server.v1}/chat/completions"
    asked = {"model": "tiny-int8", "messages": [{"role": "user", "content": "hi"}]}
    httpx.post(chat, json={**asked, "max_tokens": 2}, timeout=300).raise_for_status()  # loaded

    def tool(parameters: Any) -> dict[str, Any]:
        return {"type": "function", "function": {"name": "f", "parameters": parameters}}

    chain = {"type": "json_schema", "json_schema": {"name": "x", "schema": doubling_chain(30)}}
    hostile = [
        ({"response_format": chain}, "response_format"),
        ({"tools": [tool(branching_enum(15))]}, "tools"),
        ({"tools": [tool(doubling_chain(30))], "tool_choice": "required"}, "tools"),
    ]
    latencies: list[float] = []
    in_flight = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            while in_flight.is_set():
                start = time.perf_counter()
                assert client.get("/health").status_code in (200, 503)
                latencies.append(time.perf_counter() - start)
                time.sleep(0.02)

    in_flight.set()
    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for extra, param in hostile:
            start = time.perf_counter()
            response = httpx.post(chat, json={**asked, **extra, "max_tokens": 40}, timeout=60)
            took = time.perf_counter() - start
            # Refused as too complex, or compiled (the doubling chain flattens to one object).
            if response.status_code == 400:
                assert error_of(response, 400)["param"] == param
            else:
                assert response.status_code == 200, response.text
            assert took < 30, (param, took)
    finally:
        in_flight.clear()
        prober.join()
    assert len(latencies) >= 3
    assert max(latencies) < 0.25 and statistics.median(latencies) < 0.05, latencies


def test_a_long_stop_sequence_is_a_400(server: LiveServer) -> None:
    body = {
        "model": "tiny-int8",
        "messages": [{"role": "user", "content": "hi"}],
        "stop": ["a" * (MAX_STOP_CHARS + 1)],
    }
    response = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=60)
    assert error_of(response, 400)["param"] == "stop"
