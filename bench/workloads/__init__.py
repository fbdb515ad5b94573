"""The benchmark's fixed prompt sets, one JSON file per workload in this folder.

Each file holds OpenAI chat requests (``messages``, and ``tools`` / ``tool_choice`` where the
workload needs them) plus how the benchmark should run them:

- ``chat``: varied short prompts, answers written from scratch (the old TOPICS workload); the
  benchmark also runs them with a draft model (the issue's ``draft`` workload);
- ``shared_prefix``: one ~2,000-token system prompt common to every request, then varied
  questions (what agents and RAG front ends send): prefix caching shows in TTFT;
- ``copy_edit``: answers that quote or rewrite their input (RAG quoting, rewrites, code edits,
  JSON built from given fields): where prompt lookup pays;
- ``tool_call``: a forced call of a tool with a JSON schema: the grammar's cost per token.

:meth:`Workload.salted` makes a copy whose requests share no KV block with another salt's,
so that levels and modes of one run do not flatter each other through the prefix cache, while
requests of one salt still share what the workload means them to share (the system prompt of
``shared_prefix``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

Message = dict[str, Any]


@dataclass(frozen=True)
class Request:
    messages: tuple[Message, ...]
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def openai_fields(self) -> dict[str, Any]:
        """The request's fields of an OpenAI chat completion body."""
        out: dict[str, Any] = {"messages": [dict(m) for m in self.messages]}
        if self.tools is not None:
            out["tools"] = [dict(t) for t in self.tools]
        if self.tool_choice is not None:
            out["tool_choice"] = self.tool_choice
        return out


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    requests: tuple[Request, ...]
    max_tokens: int
    # True: generate exactly max_tokens (greedy, ignore_eos), as throughput runs want. False:
    # let answers end where the model ends them, because the text itself matters (copy/edit:
    # what follows an answer's end is not a copy of anything).
    ignore_eos: bool

    def salted(self, salt: str) -> Workload:
        """A copy whose first message starts with ``[salt]``, so no KV block is shared with
        prompts of another salt (every block's hash covers all tokens before it)."""
        return replace(self, requests=tuple(salt_request(r, salt) for r in self.requests))

    def take(self, count: int) -> list[Request]:
        """``count`` requests, cycling through the set when it is shorter."""
        return [self.requests[i % len(self.requests)] for i in range(count)]


def names() -> list[str]:
    return sorted(path.stem for path in HERE.glob("*.json"))


def load(name: str) -> Workload:
    path = HERE / f"{name}.json"
    if not path.exists():
        raise KeyError(f"no workload {name!r}; known: {', '.join(names())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    system = data.get("system")
    requests = tuple(_request(entry, system, data) for entry in data["requests"])
    if not requests:
        raise ValueError(f"workload {name!r} has no requests")
    return Workload(
        name=data["name"],
        description=data["description"],
        requests=requests,
        max_tokens=int(data.get("max_tokens", 128)),
        ignore_eos=bool(data.get("ignore_eos", True)),
    )


def _request(entry: dict[str, Any], system: str | None, source: dict[str, Any]) -> Request:
    messages: list[Message] = []
    own_system = entry.get("system", system)
    if own_system is not None:
        messages.append({"role": "system", "content": own_system})
    if "messages" in entry:
        messages.extend(entry["messages"])
    else:
        messages.append({"role": "user", "content": entry["user"]})
    tools = entry.get("tools", source.get("tools"))
    return Request(
        messages=tuple(messages),
        tools=tuple(tools) if tools is not None else None,
        tool_choice=entry.get("tool_choice", source.get("tool_choice")),
    )


def salt_request(request: Request, salt: str) -> Request:
    """``request`` with its first message starting with ``[salt]``."""
    first, *rest = request.messages
    salted = {**first, "content": f"[{salt}] {first['content']}"}
    return replace(request, messages=(salted, *rest))
