"""Reading forced calls as they are written (output/streamed_calls.py): where each call starts,
and its arguments' pieces, whatever the split of the text into steps."""

from __future__ import annotations

import json

import pytest

from ov_llm_server.output.parsers.hermes import Hermes
from ov_llm_server.output.parsers.llama3_json import Llama3Json
from ov_llm_server.output.parsers.mistral import Mistral, MistralV11
from ov_llm_server.output.parsers.phi4_mini import Phi4Mini
from ov_llm_server.output.schema import compile_schema
from ov_llm_server.output.streamed_calls import ArgumentReader

# Argument values that hold what a naive reader would take for the end of the object.
TRICKY = {"text": 'a "}" and \\"} and {"name": "x", "arguments": {', "n": [1, {"k": []}]}
PLAIN = {"city": "Paris"}


def hermes(*calls: tuple[str, dict[str, object]]) -> str:
    return "\n".join(
        f'<tool_call>\n{{"name": {json.dumps(n)}, "arguments": {json.dumps(a)}}}\n</tool_call>'
        for n, a in calls
    )


def read(reader: ArgumentReader, text: str, cut: int) -> list[tuple[str | None, str]]:
    """Events of ``text`` fed in pieces of ``cut`` characters."""
    events = []
    for i in range(0, len(text), cut):
        events += reader.feed(text[i : i + cut])
    return events


def starts_and_arguments(events: list[tuple[str | None, str]]) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    for name, piece in events:
        if name is not None:
            calls.append((name, ""))
        else:
            calls[-1] = (calls[-1][0], calls[-1][1] + piece)
    return calls


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        (Hermes, hermes(("note", TRICKY)), [("note", TRICKY)]),
        (Hermes, hermes(("a", PLAIN), ("b", TRICKY)), [("a", PLAIN), ("b", TRICKY)]),
        (
            Llama3Json,
            f'{{"name": "a", "parameters": {json.dumps(TRICKY)}}}; '
            f'{{"name": "b", "parameters": {json.dumps(PLAIN)}}}',
            [("a", TRICKY), ("b", PLAIN)],
        ),
        (
            Mistral,
            f'[TOOL_CALLS][{{"name": "a", "arguments": {json.dumps(TRICKY)}}}]',
            [("a", TRICKY)],
        ),
        (
            Phi4Mini,
            f'<|tool_call|>[{{"name": "a", "arguments": {json.dumps(TRICKY)}}}, '
            f'{{"name": "b", "arguments": {json.dumps(PLAIN)}}}]<|/tool_call|>',
            [("a", TRICKY), ("b", PLAIN)],
        ),
        (
            MistralV11,
            f"[TOOL_CALLS]a[ARGS]{json.dumps(TRICKY)}[TOOL_CALLS]b[ARGS]{json.dumps(PLAIN)}",
            [("a", TRICKY), ("b", PLAIN)],
        ),
    ],
)
def test_calls_and_their_arguments_whatever_the_split(
    fmt: type[Hermes], text: str, expected: list[tuple[str, object]], cut: int
) -> None:
    reader = ArgumentReader(fmt.call_head(), fmt.call_name)
    calls = starts_and_arguments(read(reader, text, cut))
    assert [(n, json.loads(a)) for n, a in calls] == expected
    assert reader.arguments == [a for _, a in calls]


def test_one_tool_starts_with_the_first_token() -> None:
    reader = ArgumentReader(Hermes.call_head(), Hermes.call_name, only="note")
    assert reader.feed("<tool") == [("note", "")]  # before its head is written
    text = hermes(("note", PLAIN), ("note", TRICKY))[len("<tool") :]
    calls = starts_and_arguments([("note", ""), *read(reader, text, 3)])
    assert [(n, json.loads(a)) for n, a in calls] == [("note", PLAIN), ("note", TRICKY)]


def test_arguments_arrive_as_they_are_written() -> None:
    reader = ArgumentReader(Hermes.call_head(), Hermes.call_name)
    assert reader.feed('<tool_call>\n{"name": "note", "arg') == []
    assert reader.feed('uments": {"text": "ab') == [("note", ""), (None, '{"text": "ab')]
    assert reader.feed('c"}}\n</tool_call>') == [(None, 'c"}')]
    assert reader.arguments == ['{"text": "abc"}']


def test_max_length_is_cut_as_the_arguments_stream() -> None:
    short = compile_schema(
        {"type": "object", "properties": {"city": {"type": "string", "maxLength": 3}}}
    )
    reader = ArgumentReader(Hermes.call_head(), Hermes.call_name, models={"note": short})
    text = hermes(("note", {"city": "Paris", "n": 1}), ("other", {"city": "Paris"}))
    calls = starts_and_arguments(read(reader, text, 2))
    assert calls == [("note", '{"city": "Par", "n": 1}'), ("other", '{"city": "Paris"}')]
    assert reader.arguments == [a for _, a in calls]
