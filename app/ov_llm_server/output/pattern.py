"""``pattern`` and ``format`` as grammar terms over the string's characters (not yet JSON-escaped).

A pattern is parsed by Python's own regex parser (``re._parser``). Each construct becomes a
term that matches a *subset* of what the regex matches in every common flavour (Python,
ECMA-262, Rust): ``\\d`` is ``[0-9]``, ``.`` leaves out line breaks, negated classes take
their characters from printable ASCII. A subset is enough: the grammar only has to produce
strings the pattern accepts. Constructs a grammar cannot express (backreferences,
lookarounds, word boundaries, anchors in the middle, inline flags) are refused.
"""

from __future__ import annotations

import functools
import re
import re._constants as sre_c
import re._parser as sre_parse
from typing import Any

from .budget import Budget, SchemaError
from .terms import Alt, Cls, Grammar, Lit, Rep, Seq, Term, alt, chars, opt, seq

DIGIT = Cls(((0x30, 0x39),))
# Printable ASCII: where negated classes take their characters from.
_PRINTABLE = (0x20, 0x7E)
# Any character but ASCII controls (line breaks among them): "." matches these in Python
# and Rust, and in ECMA-262 all but U+2028/U+2029. A negated class holds only ASCII: XGrammar
# clamps the bytes of a negated class to 127.
ANY = Cls(((0x00, 0x1F), (0x7F, 0x7F)), negated=True)
_CATEGORIES = {
    sre_c.CATEGORY_DIGIT: ((0x30, 0x39),),
    sre_c.CATEGORY_WORD: ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    sre_c.CATEGORY_SPACE: ((0x09, 0x0D), (0x20, 0x20)),
}
_NEGATED_CATEGORIES = {
    sre_c.CATEGORY_NOT_DIGIT: sre_c.CATEGORY_DIGIT,
    sre_c.CATEGORY_NOT_WORD: sre_c.CATEGORY_WORD,
    sre_c.CATEGORY_NOT_SPACE: sre_c.CATEGORY_SPACE,
}
_BMP = 0xFFFF


def pattern_term(pattern: str, path: str) -> Term:
    """The strings ``re.search(pattern, s)`` accepts (a subset of them), as a term."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        raise SchemaError(f"'pattern' is not a valid regex: {exc}", "pattern", path) from exc
    if parsed.state.flags & ~(sre_c.SRE_FLAG_UNICODE):
        raise SchemaError("'pattern' with inline flags cannot be enforced", "pattern", path)
    items = list(parsed)
    starts = ((sre_c.AT, sre_c.AT_BEGINNING), (sre_c.AT, sre_c.AT_BEGINNING_STRING))
    anchored_start = bool(items) and items[0] in starts
    if anchored_start:
        items = items[1:]
    ends = ((sre_c.AT, sre_c.AT_END), (sre_c.AT, sre_c.AT_END_STRING))
    anchored_end = bool(items) and items[-1] in ends
    if anchored_end:
        items = items[:-1]
    body = _sequence(items, path)
    free = Rep(ANY, 0, None)
    return seq(*([] if anchored_start else [free]), body, *([] if anchored_end else [free]))


def pattern_matches(pattern: str, value: str, budget: Budget) -> bool:
    """Whether ``re.search(pattern, value)`` finds a match, as far as the pattern's term says.

    Python's regex engine backtracks, and a client's pattern such as ``^(a+)+$`` makes it
    take exponential time on a short string that fails. The term is read instead, one
    character at a time over the set of places it may be in (:meth:`Grammar.complete`),
    which costs the length of the value times a bound set by the pattern, and spends it
    from ``budget``. The term holds a subset of the regex's strings (see above), so a
    value it accepts is always one the pattern accepts; a rare other one is refused.
    """
    return _pattern_grammar(pattern).complete(value, budget)


@functools.lru_cache(maxsize=256)
def _pattern_grammar(pattern: str) -> Grammar:
    return Grammar(pattern_term(pattern, ""), {})


def _sequence(items: list[tuple[Any, Any]], path: str) -> Term:
    return seq(*(_item(op, arg, path) for op, arg in items))


def _item(op: Any, arg: Any, path: str) -> Term:
    if op == sre_c.LITERAL:
        return Lit(chr(arg))
    if op == sre_c.NOT_LITERAL:
        return _complement(((arg, arg),))
    if op == sre_c.ANY:
        return ANY
    if op == sre_c.IN:
        return _class(arg, path)
    if op == sre_c.BRANCH:
        return alt(*(_sequence(list(branch), path) for branch in arg[1]))
    if op == sre_c.SUBPATTERN:
        _, add_flags, del_flags, sub = arg
        if add_flags or del_flags:
            raise SchemaError("'pattern' with inline flags cannot be enforced", "pattern", path)
        return _sequence(list(sub), path)
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
        lo, hi, sub = arg
        item = _sequence(list(sub), path)
        if _nullable(item):
            raise SchemaError("'pattern' repeats a part that can be empty", "pattern", path)
        return Rep(item, lo, None if hi == sre_c.MAXREPEAT else hi)
    names = {
        sre_c.AT: "anchors inside the pattern",
        sre_c.GROUPREF: "backreferences",
        sre_c.ASSERT: "lookarounds",
        sre_c.ASSERT_NOT: "lookarounds",
    }
    what = names.get(op, str(op).lower().replace("_", " "))
    raise SchemaError(f"'pattern' with {what} cannot be enforced", "pattern", path)


def _class(items: list[tuple[Any, Any]], path: str) -> Term:
    negate = False
    ranges: list[tuple[int, int]] = []
    for op, arg in items:
        if op == sre_c.NEGATE:
            negate = True
        elif op == sre_c.LITERAL:
            ranges.append((arg, arg))
        elif op == sre_c.RANGE:
            ranges.append(arg)
        elif op == sre_c.CATEGORY and arg in _CATEGORIES:
            ranges.extend(_CATEGORIES[arg])
        elif op == sre_c.CATEGORY and arg in _NEGATED_CATEGORIES:
            ranges.extend(_complement_ranges(_CATEGORIES[_NEGATED_CATEGORIES[arg]]))
        else:
            raise SchemaError(f"'pattern' class item {op} cannot be enforced", "pattern", path)
    if negate:
        return _complement(tuple(ranges))
    clipped = tuple((lo, min(hi, _BMP)) for lo, hi in _normal(ranges) if lo <= _BMP)
    if not clipped:
        raise SchemaError("'pattern' has a character class outside the BMP", "pattern", path)
    return Cls(clipped)


def _normal(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement_ranges(ranges: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    out = []
    start, end = _PRINTABLE
    for lo, hi in _normal(list(ranges)):
        if lo > start:
            out.append((start, min(lo - 1, end)))
        start = max(start, hi + 1)
    if start <= end:
        out.append((start, end))
    return [(lo, hi) for lo, hi in out if lo <= hi]


def _complement(ranges: tuple[tuple[int, int], ...]) -> Cls:
    return Cls(tuple(_complement_ranges(ranges)))


def _nullable(term: Term) -> bool:
    if isinstance(term, Lit):
        return not term.text
    if isinstance(term, Rep):
        return term.lo == 0 or _nullable(term.item)
    if isinstance(term, Alt):
        return any(_nullable(o) for o in term.options)
    if isinstance(term, Seq):
        return all(_nullable(t) for t in term.items)
    return False


# ---------------------------------------------------------------- formats


def nat_range(lo: int, hi: int) -> Term:
    """The decimal numerals of lo..hi (0 <= lo <= hi), without leading zeros."""
    parts: list[Term] = []
    width = len(str(lo))
    while lo <= hi:
        top = min(hi, 10**width - 1)
        parts.append(_same_width(str(lo), str(top)))
        lo, width = top + 1, width + 1
    return alt(*parts)


def _same_width(lo: str, hi: str) -> Term:
    if lo == hi:
        return Lit(lo)
    if len(lo) == 1:
        return Cls(((ord(lo), ord(hi)),))
    if lo[0] == hi[0]:
        return seq(Lit(lo[0]), _same_width(lo[1:], hi[1:]))
    rest = len(lo) - 1
    parts: list[Term] = []
    low_full = lo[1:] == "0" * rest
    high_full = hi[1:] == "9" * rest
    first = lo[0] if low_full else chr(ord(lo[0]) + 1)
    last = hi[0] if high_full else chr(ord(hi[0]) - 1)
    if not low_full:
        parts.append(seq(Lit(lo[0]), _same_width(lo[1:], "9" * rest)))
    if first <= last:
        head: Term = Lit(first) if first == last else Cls(((ord(first), ord(last)),))
        parts.append(seq(head, Rep(DIGIT, rest, rest)))
    if not high_full:
        parts.append(seq(Lit(hi[0]), _same_width("0" * rest, hi[1:])))
    return alt(*parts)


def _pad2(lo: int, hi: int) -> Term:
    return _same_width(f"{lo:02d}", f"{hi:02d}")


_DAYS = {31: ("01", "03", "05", "07", "08", "10", "12"), 30: ("04", "06", "09", "11"), 28: ("02",)}
_DATE = seq(
    Cls(((0x31, 0x39),)),
    Rep(DIGIT, 3, 3),
    Lit("-"),
    alt(
        *(
            seq(alt(*(Lit(m) for m in months)), Lit("-"), _pad2(1, days))
            for days, months in _DAYS.items()
        )
    ),
)
_OFFSET = alt(Lit("Z"), seq(chars("+-"), _pad2(0, 23), Lit(":"), _pad2(0, 59)))
_TIME = seq(
    _pad2(0, 23),
    Lit(":"),
    _pad2(0, 59),
    Lit(":"),
    _pad2(0, 59),
    opt(seq(Lit("."), Rep(DIGIT, 1, 6))),
    _OFFSET,
)
_HEX = Cls(((0x30, 0x39), (0x61, 0x66)))
_ALNUM = Cls(((0x30, 0x39), (0x61, 0x7A)))
_LOWER = Cls(((0x61, 0x7A),))
_OCTET = nat_range(0, 255)
FORMATS: dict[str, Term] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": seq(_DATE, Lit("T"), _TIME),
    "uuid": seq(*[part for n in (8, 4, 4, 4, 12) for part in (Lit("-"), Rep(_HEX, n, n))][1:]),
    "email": seq(
        Rep(_ALNUM, 1, None),
        Rep(seq(Lit("."), Rep(_ALNUM, 1, None)), 0, None),
        Lit("@"),
        Rep(_ALNUM, 1, None),
        Lit("."),
        _LOWER,
        Rep(_LOWER, 1, None),
    ),
    "ipv4": seq(_OCTET, Lit("."), _OCTET, Lit("."), _OCTET, Lit("."), _OCTET),
}
