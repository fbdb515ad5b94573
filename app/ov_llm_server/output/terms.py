"""A small grammar algebra: the EBNF handed to GenAI and the closer that completes cut output.

Both come from the same terms, so the closer only ever writes what the grammar allows:
text the engine generated under the grammar is always a prefix of the grammar's language,
and :meth:`Grammar.close` finds the shortest way to finish it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .budget import Budget


class Term:
    """A grammar term; every term is a frozen dataclass (hashable, comparable)."""


@dataclass(frozen=True)
class Lit(Term):
    text: str


@dataclass(frozen=True)
class Cls(Term):
    """One character from ``ranges`` (or, when ``negated``, from outside them)."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False

    def allows(self, ch: str) -> bool:
        code = ord(ch)
        inside = any(lo <= code <= hi for lo, hi in self.ranges)
        return inside != self.negated

    def sample(self) -> str:
        for ch in "a0 -.":
            if self.allows(ch):
                return ch
        if not self.negated:
            return chr(self.ranges[0][0])
        code = 0x20
        while not self.allows(chr(code)):
            code += 1
        return chr(code)

    def size(self) -> int:
        inside = sum(hi - lo + 1 for lo, hi in self.ranges)
        return 0x110000 - inside if self.negated else inside


@dataclass(frozen=True)
class Seq(Term):
    items: tuple[Term, ...]


@dataclass(frozen=True)
class Alt(Term):
    options: tuple[Term, ...]


@dataclass(frozen=True)
class Rep(Term):
    """``item`` from ``lo`` to ``hi`` (None: no limit) times, ``sep`` between two items."""

    item: Term
    lo: int = 0
    hi: int | None = None
    sep: Term | None = None


@dataclass(frozen=True)
class Rule(Term):
    name: str


def seq(*items: Term) -> Term:
    flat: list[Term] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Seq) else [item])
    merged: list[Term] = []
    for item in flat:
        if isinstance(item, Lit) and merged and isinstance(merged[-1], Lit):
            merged[-1] = Lit(merged[-1].text + item.text)
        elif not (isinstance(item, Lit) and not item.text):
            merged.append(item)
    if not merged:
        return Lit("")
    return merged[0] if len(merged) == 1 else Seq(tuple(merged))


def alt(*options: Term) -> Term:
    unique = tuple(dict.fromkeys(options))
    return unique[0] if len(unique) == 1 else Alt(unique)


def opt(term: Term) -> Term:
    return Rep(term, 0, 1)


def chars(text: str) -> Cls:
    """A class of exactly the characters in ``text``."""
    return Cls(tuple((ord(c), ord(c)) for c in sorted(set(text))))


# ---------------------------------------------------------------- EBNF


def literal(text: str) -> str:
    """An EBNF string literal matching ``text`` exactly."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_LATIN1 = re.compile("([\u0080-\u00ff])")


def _class_char(code: int) -> str:
    if code < 0x20 or chr(code) in '\\]-^["':
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    if code > 0x7E:
        return f"\\u{code:04x}"
    return chr(code)


def _ebnf(term: Term) -> str:
    if isinstance(term, Lit):
        # XGrammar reads U+0080..U+00FF in a string literal as single bytes (measured with
        # GenAI 2026.4: "é" came out as mojibake); as a one-character class it is right.
        parts = [p for p in _LATIN1.split(term.text) if p]
        if len(parts) <= 1 and not _LATIN1.fullmatch(term.text):
            return literal(term.text)
        return " ".join(
            f"[{_class_char(ord(p))}]" if _LATIN1.fullmatch(p) else literal(p) for p in parts
        )
    if isinstance(term, Cls):
        body = "".join(
            _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}"
            for lo, hi in term.ranges
        )
        return f"[{'^' if term.negated else ''}{body}]"
    if isinstance(term, Seq):
        return " ".join(_group(t) for t in term.items)
    if isinstance(term, Alt):
        return " | ".join(_ebnf(t) for t in term.options)
    if isinstance(term, Rep):
        if term.sep is None:
            item = _group(term.item)
            if (term.lo, term.hi) == (0, 1):
                return f"{item}?"
            if term.hi is None:
                return (
                    f"{item}{'*' if term.lo == 0 else '+' if term.lo == 1 else f'{{{term.lo},}}'}"
                )
            return item if term.lo == term.hi == 1 else f"{item}{{{term.lo},{term.hi}}}"
        more = Rep(
            Seq((term.sep, term.item)),
            max(term.lo - 1, 0),
            None if term.hi is None else term.hi - 1,
        )
        body = f"{_group(term.item)} {_ebnf(more)}" if more.hi != 0 else _group(term.item)
        return body if term.lo > 0 else f"({body})?"
    if isinstance(term, Rule):
        return term.name
    raise AssertionError(f"unknown term {term!r}")


def _group(term: Term) -> str:
    text = _ebnf(term)
    compound = isinstance(term, Alt | Seq) or (isinstance(term, Rep) and term.sep is not None)
    split = isinstance(term, Lit) and len(term.text) > 1 and _LATIN1.search(term.text) is not None
    return f"({text})" if compound or split else text


# ---------------------------------------------------------------- the grammar


# A frame of the closer's stack: ("t", term) a term still to match whole; ("lit", term, offset);
# ("cls", term); ("rep", term, items so far). A stack is a cons list (frame, rest) or None.
Frame = tuple[Any, ...]
Stack = tuple[Frame, Any] | None


class Grammar:
    """Named rules and a root; ``ebnf()`` for GenAI, ``close()`` for cut output."""

    def __init__(self, root: Term, rules: dict[str, Term], budget: Budget | None = None) -> None:
        self.root = root
        self.rules = rules
        self._min: dict[str, str | None] = self._rule_minimums(budget)

    def ebnf(self) -> str:
        lines = [f"root ::= {_ebnf(self.root)}"]
        used = self._reachable()
        lines += [f"{name} ::= {_ebnf(term)}" for name, term in self.rules.items() if name in used]
        return "\n".join(lines) + "\n"

    def _reachable(self) -> set[str]:
        used: set[str] = set()
        todo: list[Term] = [self.root]
        while todo:
            term = todo.pop()
            if isinstance(term, Rule):
                if term.name not in used:
                    used.add(term.name)
                    todo.append(self.rules[term.name])
            elif isinstance(term, Seq):
                todo.extend(term.items)
            elif isinstance(term, Alt):
                todo.extend(term.options)
            elif isinstance(term, Rep):
                todo.extend([term.item] if term.sep is None else [term.item, term.sep])
        return used

    # ------------------------------------------------------------ shortest texts

    def _rule_minimums(self, budget: Budget | None) -> dict[str, str | None]:
        best: dict[str, str | None] = dict.fromkeys(self.rules)
        changed = True
        while changed:  # a fixpoint: recursive rules settle on their shortest finite text
            if budget is not None:
                budget.spend(len(self.rules))  # a chain of rules can take as many rounds
            changed = False
            for name, term in self.rules.items():
                text = self._min_text(term, best)
                if text is not None and (best[name] is None or len(text) < len(best[name] or "")):
                    best[name] = text
                    changed = True
        return best

    def _min_text(self, term: Term, best: dict[str, str | None]) -> str | None:
        if isinstance(term, Lit):
            return term.text
        if isinstance(term, Cls):
            return term.sample()
        if isinstance(term, Seq):
            parts = [self._min_text(t, best) for t in term.items]
            return None if any(p is None for p in parts) else "".join(p or "" for p in parts)
        if isinstance(term, Alt):
            texts = [t for t in (self._min_text(o, best) for o in term.options) if t is not None]
            return min(texts, key=len) if texts else None
        if isinstance(term, Rep):
            if term.lo == 0:
                return ""
            item = self._min_text(term.item, best)
            sep = "" if term.sep is None else self._min_text(term.sep, best)
            if item is None or sep is None:
                return None
            return item + (sep + item) * (term.lo - 1)
        if isinstance(term, Rule):
            return best[term.name]
        raise AssertionError(f"unknown term {term!r}")

    def min_text(self, term: Term | None = None) -> str | None:
        """The shortest text of ``term`` (the root by default); None if there is none."""
        return self._min_text(self.root if term is None else term, self._min)

    # ------------------------------------------------------------ closing cut output

    def close(self, text: str) -> str | None:
        """The shortest text that makes ``text`` a complete sentence, or None if it is no prefix."""
        stacks = _Reader(self).read(text)
        rests = [self._rest(stack) for stack in stacks]
        return min((r for r in rests if r is not None), key=len, default=None)

    def complete(self, text: str, budget: Budget | None = None) -> bool:
        """Whether ``text`` is a whole sentence of the grammar (reading spends ``budget``)."""
        return None in _Reader(self, budget).read(text)

    def _rest(self, stack: Stack) -> str | None:
        parts: list[str] = []
        while stack is not None:
            frame, stack = stack
            kind, term = frame[0], frame[1]
            if kind == "lit":
                parts.append(term.text[frame[2] :])
            elif kind == "cls":
                parts.append(term.sample())
            elif kind == "rep":
                missing = term.lo - frame[2]
                if missing > 0:
                    item = self.min_text(term.item)
                    sep = "" if term.sep is None else self.min_text(term.sep)
                    if item is None or sep is None:
                        return None
                    parts.append(
                        (sep + item) * missing
                        if frame[2] > 0
                        else item + (sep + item) * (missing - 1)
                    )
            else:
                text = self.min_text(term)
                if text is None:
                    return None
                parts.append(text)
        return "".join(parts)


class _Reader:
    """Runs text through the grammar: the set of parse stacks after each character.

    Stacks are hash-consed (one object per distinct stack) and every step is memoised by
    object identity, so a long string or digit run costs a dictionary lookup per character
    however deep the document is: the count of an unbounded repetition is kept only up to
    its minimum, which makes the stacks inside it repeat.
    """

    def __init__(self, grammar: Grammar, budget: Budget | None = None) -> None:
        self._budget = budget
        self._rules = grammar.rules
        self._root = grammar.root
        self._nodes: dict[tuple[Any, ...], Stack] = {}
        self._expanded: dict[int, list[Stack]] = {}
        self._stepped: dict[tuple[int, str], list[Stack]] = {}

    def read(self, text: str) -> list[Stack]:
        stacks = self._expand(self._cons(("t", self._root), None))
        for ch in text:
            if self._budget is not None:
                self._budget.spend(len(stacks))
            out: dict[int, Stack] = {}
            for stack in stacks:
                for nxt in self._step(stack, ch):
                    out[id(nxt)] = nxt
            stacks = list(out.values())
            if not stacks:
                return []
        return stacks

    def _cons(self, frame: Frame, rest: Stack) -> Stack:
        key = (frame[0], id(frame[1]), frame[2] if len(frame) > 2 else None, id(rest))
        node = self._nodes.get(key)
        if node is None:
            node = (frame, rest)
            self._nodes[key] = node
        return node

    def _step(self, stack: Stack, ch: str) -> list[Stack]:
        if stack is None:
            return []
        key = (id(stack), ch)
        done = self._stepped.get(key)
        if done is not None:
            return done
        frame, rest = stack
        out: list[Stack] = []
        if frame[0] == "lit":
            term, offset = frame[1], frame[2]
            if term.text[offset] == ch:
                if offset + 1 < len(term.text):
                    out = [self._cons(("lit", term, offset + 1), rest)]
                else:
                    out = self._expand(rest)
        elif frame[1].allows(ch):
            out = self._expand(rest)
        self._stepped[key] = out
        return out

    def _expand(self, stack: Stack) -> list[Stack]:
        """The stacks reachable without reading, each with a reading frame on top (or empty)."""
        start = id(stack)
        done = self._expanded.get(start)
        if done is not None:
            return done
        out: dict[int, Stack] = {}
        todo = [stack]
        while todo:
            stack = todo.pop()
            if stack is None:
                out[id(None)] = None
                continue
            frame, rest = stack
            kind, term = frame[0], frame[1]
            if kind in ("lit", "cls"):
                out[id(stack)] = stack
            elif kind == "rep":
                count = frame[2]
                if count >= term.lo:
                    todo.append(rest)
                if term.hi is None or count < term.hi:
                    # Past its minimum an unbounded repetition only needs to know it has begun.
                    more = count + 1 if term.hi is not None else min(count + 1, max(term.lo, 1))
                    nxt = self._cons(("t", term.item), self._cons(("rep", term, more), rest))
                    if count > 0 and term.sep is not None:
                        nxt = self._cons(("t", term.sep), nxt)
                    todo.append(nxt)
            elif isinstance(term, Lit):
                todo.append(self._cons(("lit", term, 0), rest) if term.text else rest)
            elif isinstance(term, Cls):
                node = self._cons(("cls", term), rest)
                out[id(node)] = node
            elif isinstance(term, Seq):
                for item in reversed(term.items):
                    rest = self._cons(("t", item), rest)
                todo.append(rest)
            elif isinstance(term, Alt):
                todo.extend(self._cons(("t", option), rest) for option in term.options)
            elif isinstance(term, Rep):
                todo.append(self._cons(("rep", term, 0), rest))
            elif isinstance(term, Rule):
                todo.append(self._cons(("t", self._rules[term.name]), rest))
        result = list(out.values())
        self._expanded[start] = result
        return result
