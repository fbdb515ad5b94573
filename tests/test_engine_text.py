"""The engine's text pieces: incremental detokenization, per-token texts and their log
probabilities, and stop sequences."""

from __future__ import annotations

from pathlib import Path

import openvino_genai as og
from hypothesis import given, settings
from hypothesis import strategies as st

from ov_llm_server.engine.core.llm import FIM_MARKERS, fim_markers, fim_prompt
from ov_llm_server.engine.core.text import (
    IncrementalDetokenizer,
    StopMatcher,
    TokenLogprobs,
    decode_windows,
    token_texts,
)

MIXED = 'Hello! <tool_call> {"city": "Paris"} héllo wörld ✓ 21 degrees.'


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=400)
@given(
    text=st.text(alphabet="abc ", max_size=40),
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(0, 40), max_size=10),
)
def test_stop_matcher_stops_at_the_first_stop_to_appear_for_any_split(
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
    # Generation stops with the first piece after which some stop sequence has appeared,
    # and the text ends where the earliest one then present starts. ("abc" and "b" in "abc"
    # cut after "ab": "b" came first, the answer is "a"; "abc" would never be generated.)
    expected, should_stop, end = text, False, 0
    for piece in _split(text, cuts):
        end += len(piece)
        hits = [i for i in (text[:end].find(s) for s in stops) if i >= 0]
        if hits:
            expected, should_stop = text[: min(hits)], True
            break
    assert stopped == should_stop
    assert out == expected
    # The stop reported is one that starts where the text was cut.
    if stopped:
        assert matcher.met in stops and text.startswith(matcher.met or "", len(out))
    else:
        assert matcher.met is None


def _ids(tokenizer: og.Tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]


def test_detokenizer_streams_exactly_the_decoded_text(tiny_ir_int8: Path) -> None:
    tokenizer = og.Tokenizer(str(tiny_ir_int8))
    ids = _ids(tokenizer, MIXED)
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = []
    for token in ids:
        windows = detokenizer.windows([token])
        assert len(windows) == 2
        pieces += detokenizer.advance(decode_windows(tokenizer, windows))
    pieces.append(detokenizer.flush())
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 60), max_size=8))
def test_per_token_pieces_add_up_to_the_text_however_tokens_arrive(
    tiny_ir_int8: Path, cuts: list[int]
) -> None:
    """One piece per token, whatever the steps bring (one token, several, echo's prompt):
    the pieces join to the decoded text, and a token inside a character gets an empty piece."""
    tokenizer = og.Tokenizer(str(tiny_ir_int8))
    ids = _ids(tokenizer, MIXED)
    points = sorted({min(c, len(ids)) for c in cuts} | {0, len(ids)})
    detokenizer = IncrementalDetokenizer(tokenizer, per_token=True)
    pieces: list[str] = []
    for start, end in zip(points, points[1:], strict=False):
        windows = detokenizer.windows(ids[start:end])
        assert len(windows) == end - start + 1
        pieces += detokenizer.advance(decode_windows(tokenizer, windows))
    assert len(pieces) == len(ids)
    pieces[-1] += detokenizer.flush()
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)
    assert token_texts(tokenizer, ids, chunk=5) == pieces


def test_token_logprobs_follow_the_text_sent_and_stop_where_it_was_cut() -> None:
    held = TokenLogprobs()
    held.push(["Hel", "lo", " wor", "ld"], [-0.1, -0.2, -0.3, -0.4])
    assert held.release("Hel") == [("Hel", -0.1)]
    assert held.release("") == []
    # A stop sequence "wor" cut the text after "Hello ": " wor" starts inside what was sent.
    assert held.release("lo ") == [("lo", -0.2), (" wor", -0.3)]
    assert held.rest() == [("ld", -0.4)]


def test_fill_in_the_middle_takes_the_markers_that_are_single_tokens(tiny_ir_int8: Path) -> None:
    """The tiny model has no FIM tokens: 'suffix' is refused for it (test_completions.py);
    a vocabulary with one family's markers as tokens gets that family's prompt."""
    tokenizer = og.Tokenizer(str(tiny_ir_int8))
    assert fim_markers(lambda text: len(_ids(tokenizer, text)) == 1) is None
    starcoder = set(FIM_MARKERS[1])
    markers = fim_markers(lambda text: text in starcoder)
    assert markers == ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")
    assert fim_prompt(markers, "def f(", "\n    return x") == (
        "<fim_prefix>def f(<fim_suffix>\n    return x<fim_middle>"
    )


def test_a_character_cut_half_way_ends_grammar_output_before_it(tiny_ir_int8: Path) -> None:
    """The budget may cut a character whose first bytes a token wrote: plain text shows it
    as U+FFFD; grammar-constrained text ends before it, so the server can close the document."""
    tokenizer = og.Tokenizer(str(tiny_ir_int8))
    ids = _ids(tokenizer, 'a "🙂')
    cut = next(i for i in range(1, len(ids)) if tokenizer.decode(ids[:i]).endswith("\ufffd"))
    for whole, expected in ((False, 'a "\ufffd'), (True, 'a "')):
        detokenizer = IncrementalDetokenizer(tokenizer, whole_characters=whole)
        text = "".join(
            detokenizer.advance(decode_windows(tokenizer, detokenizer.windows(ids[:cut])))
        )
        assert text + detokenizer.flush() == expected
