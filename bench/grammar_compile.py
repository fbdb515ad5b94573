"""What a grammar costs the other requests on a model: the step in which it compiles, and after.

A free request generates; a grammar-constrained one joins it. GenAI compiles the grammar
inside the step that admits the request, so that step is what the free request waits. Each
grammar joins three times: the first join pays the compile, the later ones show GenAI's
cache. ``char{0,n}`` grammars show why output/grammar.py does not count string characters.

    python bench/grammar_compile.py MODEL [--counted 16 64 256]

MODEL is an IR folder or a GGUF file. The largest schema is the largest one the limits allow
(``largest_allowed_schema`` in tests/schema_strategies.py, which tests/test_structured.py
compiles too).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import openvino_genai as og

from ov_llm_server.output import plan_output
from ov_llm_server.output.grammar import JsonGrammar
from ov_llm_server.output.schema import compile_schema
from ov_llm_server.protocol import ChatCompletionRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from schema_strategies import largest_allowed_schema  # noqa: E402

PROMPT = "<|im_start|>user\nDescribe Paris<|im_end|>\n<|im_start|>assistant\n"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "born": {"type": "string", "format": "date"},
    },
    "required": ["name", "age"],
}
CHAR = r'char ::= [^"\\\x00-\x1f] | "\\" ["\\/bfnrt]'


def ebnf(schema: Any) -> str:
    builder = JsonGrammar()
    return builder.grammar(builder.model(compile_schema(schema))).ebnf()


class Probe:
    def __init__(self, model: str) -> None:
        self.pipe = og.ContinuousBatchingPipeline(model, og.SchedulerConfig(), "CPU", {})
        tokenizer = self.pipe.get_tokenizer()
        self.ids = tokenizer.encode(PROMPT, add_special_tokens=False).input_ids
        self.next_id = 0

    def _config(self, max_new_tokens: int, grammar: str | None) -> Any:
        config = og.GenerationConfig()
        config.max_new_tokens = max_new_tokens
        config.do_sample = False
        if grammar is not None:
            config.structured_output_config = og.StructuredOutputConfig(grammar=grammar)
        return config

    def _add(self, max_new_tokens: int, grammar: str | None) -> Any:
        self.next_id += 1
        return self.pipe.add_request(self.next_id, self.ids, self._config(max_new_tokens, grammar))

    def _timed_step(self) -> float:
        started = time.perf_counter()
        self.pipe.step()
        return time.perf_counter() - started

    def join(self, grammar: str | None) -> tuple[float, float, float]:
        """(free step, the joining step, later steps) in seconds, medians where several."""
        free = self._add(400, None)
        before = [self._timed_step() for _ in range(6)][2:]
        joined = self._add(12, grammar)
        steps = []
        while joined.get_status() == og.GenerationStatus.RUNNING:
            steps.append(self._timed_step())
        free.cancel()
        self.pipe.step()
        return statistics.median(before), steps[0], statistics.median(steps[1:] or steps)

    def report(self, label: str, grammar: str | None) -> None:
        runs = [self.join(grammar) for _ in range(3)]
        free = statistics.median(r[0] for r in runs)
        later = statistics.median(r[2] for r in runs)
        again = statistics.median(r[1] for r in runs[1:])
        sys.stdout.write(
            f"{label:26s} free step {free * 1000:6.0f} ms | joining step: first "
            f"{runs[0][1] * 1000:6.0f} ms, again {again * 1000:6.0f} ms | "
            f"later steps {later * 1000:6.0f} ms\n"
        )
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--counted", type=int, nargs="*", default=[16, 64, 256])
    args = parser.parse_args()
    probe = Probe(args.model)
    probe.join(None)  # warm-up
    probe.report("no grammar", None)
    probe.report("pydantic-like person", ebnf(PERSON))
    json_object = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"},
        }
    )
    probe.report("json_object", plan_output(json_object, "", None).grammar)
    probe.report("largest allowed schema", ebnf(largest_allowed_schema()))
    for n in args.counted:
        probe.report(
            f"counted string char{{0,{n}}}", f'root ::= "\\"" char{{0,{n}}} "\\""\n{CHAR}\n'
        )


if __name__ == "__main__":
    main()
