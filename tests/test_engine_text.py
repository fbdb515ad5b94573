"""The engine's text pieces: incremental detokenization and stop sequences."""

from __future__ import annotations

from pathlib import Path

import openvino_genai as og
from hypothesis import given, settings
from hypothesis import strategies as st

from ov_llm_server.engine.core.text import IncrementalDetokenizer, StopMatcher


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=400)
@given(
    text=st.text(alphabet="abc ", max_size=40),
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(0, 40), max_size=10),
)
def test_stop_matcher_agrees_with_find_for_any_split(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    matcher = StopMatcher(stops)
    out, stopped = "", False
    for piece in _split(text, cuts):
        emitted, stopped = matcher.push(piece)
        out += emitted
        if stopped:
            break
    if not stopped:
        out += matcher.flush()
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    assert stopped == bool(hits)
    assert out == (text[: min(hits)] if hits else text)


def test_detokenizer_streams_exactly_the_decoded_text(tiny_ir_int8: Path) -> None:
    tokenizer = og.Tokenizer(str(tiny_ir_int8))
    text = 'Hello! <tool_call> {"city": "Paris"} héllo wörld ✓ 21 degrees.'
    ids = [int(i) for i in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = []
    for token in ids:
        prefix, full = detokenizer.windows([token])
        decode = [str(tokenizer.decode(w)) if w else "" for w in (prefix, full)]
        pieces.append(detokenizer.advance(*decode))
    pieces.append(detokenizer.flush())
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)
