"""Shaping the model's output: what it must produce, the grammar that forces it, and parsing.

* ``plan`` decides per request: free text, a forced tool call, or a JSON schema;
* ``schema`` is the one JSON Schema interpreter; ``grammar`` (over ``terms``) turns it into
  the EBNF GenAI enforces and closes output the token budget cut short;
* ``parsers`` holds the tool-call formats, one module each; ``reasoning`` the think tags.
"""

from __future__ import annotations

from .deltas import OutputParser, ParsedDelta, ParsedToolCall
from .plan import OutputPlan, plan_output

__all__ = ["OutputParser", "OutputPlan", "ParsedDelta", "ParsedToolCall", "plan_output"]
