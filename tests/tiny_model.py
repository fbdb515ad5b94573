"""A tiny real chat model, built on this machine, that answers a fixed set of dialogues verbatim.

No model hub is reachable, so tests build their own model: a byte-level BPE tokenizer trained on
local text, a Qwen2.5-style chat template with tool support, and a ~0.5M parameter
``Qwen2ForCausalLM`` trained until greedy decoding reproduces every answer in ``DIALOGUES``.
The model is cached by a hash of this file and its IR folders also by a hash of the converter,
so a change to either rebuilds what depends on it and nothing else does.

Run ``python tests/tiny_model.py`` to build (or find) the cache and print where it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SEED = 1234

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "Name of the city."}},
            "required": ["city"],
        },
    },
}
TOOLS: list[dict[str, Any]] = [WEATHER_TOOL]


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """How the model writes one tool call (the Hermes / Qwen2.5 format)."""
    body = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>\n{body}\n</tool_call>"


STORY = (
    "Once upon a time a small robot lived by the sea. Every morning it walked along the beach, "
    "picked up shells and counted the waves. One day it found a bottle with a map inside, "
    "followed the map over seven hills, and at the end of the road it met an old turtle who "
    "became its best friend."
)

_PARIS_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
}

# name -> {"messages", "tools", "answer"}: the model answers ``messages`` (+ ``tools``) with
# exactly ``answer`` under greedy decoding, and then stops at <|im_end|>.
DIALOGUES: dict[str, dict[str, Any]] = {
    "D_HELLO": {
        "messages": [{"role": "user", "content": "Say hello"}],
        "tools": None,
        "answer": "Hello! How can I help you today?",
    },
    "D_CAPITAL": {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "tools": None,
        "answer": "The capital of France is Paris.",
    },
    "D_COUNT": {
        "messages": [{"role": "user", "content": "Count to five"}],
        "tools": None,
        "answer": "one two three four five",
    },
    "D_STORY": {
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "tools": None,
        "answer": STORY,
    },
    "D_PIRATE": {
        "messages": [
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "Say hello"},
        ],
        "tools": None,
        "answer": "Ahoy matey!",
    },
    "D_TOOL": {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": TOOLS,
        "answer": tool_call_text("get_weather", {"city": "Paris"}),
    },
    "D_TOOL_RESULT": {
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [_PARIS_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temperature": 21})},
        ],
        "tools": TOOLS,
        "answer": "It is 21 degrees in Paris.",
    },
    "D_PARALLEL": {
        "messages": [{"role": "user", "content": "What is the weather in Paris and Rome?"}],
        "tools": TOOLS,
        "answer": tool_call_text("get_weather", {"city": "Paris"})
        + "\n"
        + tool_call_text("get_weather", {"city": "Rome"}),
    },
    "D_THINK": {
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "tools": None,
        "answer": "<think>2 plus 2 is 4.</think>The answer is 4.",
    },
    "D_JSON": {
        "messages": [{"role": "user", "content": "Describe Paris"}],
        "tools": None,
        "answer": "Paris is a city in France.",
    },
}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added as ordinary (non-special) tokens: one id each, and the detokenizer keeps them.
TAG_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

# Qwen2.5 / Hermes conventions, minus the default system prompt. Written with explicit string
# pieces so Jinja2 (transformers) and minja (openvino_genai) render byte-identical prompts.
# Tool-call arguments may arrive as the OpenAI JSON string or as an object.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.system = messages[0]['content'] -%}"
    "{%- endif -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if ns.system -%}{{- ns.system + '\\n\\n' -}}{%- endif -%}"
    "{{- " + json.dumps(TOOLS_PREAMBLE) + " -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- " + json.dumps(TOOLS_INSTRUCTIONS) + " + '<|im_end|>\\n' -}}"
    "{%- elif ns.system -%}"
    "{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if not loop.first -%}"
    "{{- '<|im_start|>system\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant' -}}"
    "{%- set calls = message['tool_calls'] if message['tool_calls'] is defined"
    " and message['tool_calls'] else [] -%}"
    "{%- if message['content'] -%}{{- '\\n' + message['content'] -}}"
    "{%- elif not calls -%}{{- '\\n' -}}{%- endif -%}"
    "{%- for call in calls -%}"
    "{%- set fn = call['function'] if call['function'] is defined else call -%}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' -}}"
    "{%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}"
    "{%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}"
    "{{- '<|im_start|>user' -}}"
    "{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' -}}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

FILLER = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with one step.
Machine learning models turn text into tokens and tokens into numbers. The weather today is sunny
with a light breeze; tomorrow it may rain in the north and snow in the mountains. Cities such as
Paris, Rome, Berlin, Madrid, London, Vienna and Lisbon attract millions of visitors every year.
Please answer the question briefly. Thank you very much! Could you help me with my homework?
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 21 42 100 1000. Symbols: {} [] () <> "" '' : ; , . ! ? - _ /
The server streams tokens to the client as soon as they are generated, and the client prints them.
JSON objects have keys and values: {"name": "value", "count": 3, "items": [1, 2, 3], "ok": true}.
"""

MODEL_CONFIG: dict[str, Any] = {
    "hidden_size": 128,
    # 320 is not a multiple of int4's default group size (128): the converter has to adapt.
    "intermediate_size": 320,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
}
VOCAB_SIZE = 1024
MIN_TRAIN_STEPS = 200
MAX_TRAIN_STEPS = 1500
# Greedy must win by this many logits at every answer position, so fp16/int8 rounding of the
# weights cannot flip a token.
MIN_MARGIN = 6.0
IR_FORMATS = ("int8", "fp16", "int4")


def render_prompt(tokenizer: Any, dialogue: dict[str, Any]) -> str:
    text: str = tokenizer.apply_chat_template(
        dialogue["messages"], tools=dialogue["tools"], add_generation_prompt=True, tokenize=False
    )
    return text


def _tokenizer_corpus(dialogues: dict[str, dict[str, Any]]) -> list[str]:
    texts = [FILLER, TOOLS_PREAMBLE, TOOLS_INSTRUCTIONS, json.dumps(WEATHER_TOOL)]
    for dialogue in dialogues.values():
        texts.append(dialogue["answer"])
        texts.extend(str(m["content"]) for m in dialogue["messages"] if m.get("content"))
    texts.extend(["system", "user", "assistant", "tool", "\n"])
    return texts


def build_tokenizer(
    dialogues: dict[str, dict[str, Any]] = DIALOGUES, chat_template: str = CHAT_TEMPLATE
) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(TAG_TOKENS),
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(dialogues) * 4, trainer=trainer)
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=chat_template,
        model_max_length=MODEL_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    return tokenizer


def _encode_examples(
    tokenizer: Any, dialogues: dict[str, dict[str, Any]]
) -> list[tuple[list[int], list[int]]]:
    examples = []
    for dialogue in dialogues.values():
        prompt_ids = tokenizer(render_prompt(tokenizer, dialogue), add_special_tokens=False)
        answer_ids = tokenizer(dialogue["answer"] + EOS_TOKEN, add_special_tokens=False)
        examples.append((list(prompt_ids["input_ids"]), list(answer_ids["input_ids"])))
    return examples


def _check_greedy(model: Any, examples: list[tuple[list[int], list[int]]]) -> tuple[bool, float]:
    """Teacher-forced check: the argmax at every answer position is the answer token.

    With a causal model that is exactly "greedy decoding reproduces the answer". Also returns
    the smallest margin between the right token's logit and the best wrong one.
    """
    import torch

    ok = True
    margin = float("inf")
    with torch.no_grad():
        for prompt, answer in examples:
            ids = torch.tensor([prompt + answer])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            target = torch.tensor(answer)
            right = logits.gather(1, target[:, None])[:, 0]
            wrong = logits.scatter(1, target[:, None], float("-inf")).max(dim=1).values
            ok = ok and bool((logits.argmax(dim=1) == target).all())
            margin = min(margin, float((right - wrong).min()))
    return ok, margin


def build_hf_model(
    out_dir: Path,
    dialogues: dict[str, dict[str, Any]] = DIALOGUES,
    chat_template: str = CHAT_TEMPLATE,
) -> Path:
    """Train a tiny model on ``dialogues`` (prompts rendered by ``chat_template``) and save it
    as a Hugging Face folder at ``out_dir``."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    started = time.monotonic()
    torch.manual_seed(SEED)
    tokenizer = build_tokenizer(dialogues, chat_template)
    examples = _encode_examples(tokenizer, dialogues)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        **MODEL_CONFIG,
    )
    model = Qwen2ForCausalLM(config)
    model.train()

    width = max(len(p) + len(a) for p, a in examples)
    input_ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (prompt, answer) in enumerate(examples):
        seq = prompt + answer
        input_ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, len(prompt) : len(seq)] = torch.tensor(answer)
        mask[row, : len(seq)] = 1

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    steps = 0
    passed, margin = False, float("-inf")
    while steps < MAX_TRAIN_STEPS:
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 50 == 0:
            model.eval()
            passed, margin = _check_greedy(model, examples)
            model.train()
            log.info("step %d loss %.4f greedy=%s margin=%.2f", steps, loss.item(), passed, margin)
            if passed and margin >= MIN_MARGIN and steps >= MIN_TRAIN_STEPS:
                break
    if not (passed and margin >= MIN_MARGIN):
        raise RuntimeError(f"tiny model did not converge in {steps} steps (margin {margin:.2f})")
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    log.info(
        "tiny model: %d parameters, %d steps, margin %.2f, built in %.1f s",
        model.num_parameters(),
        steps,
        margin,
        time.monotonic() - started,
    )
    return out_dir


def _export_ir(hf_dir: Path, out_dir: Path, weight_format: str) -> None:
    from ov_llm_server.convert.export import ExportOptions, export_model

    export_model(hf_dir, out_dir, ExportOptions(weight_format=weight_format))


def file_hash(*paths: Path) -> str:
    """A short hash of the files' contents: the cache key of what they build."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _converter_hash() -> str:
    import ov_llm_server.convert.export as export_module

    return file_hash(Path(export_module.__file__))


def default_cache_root() -> Path:
    return Path(os.environ.get("OV_TEST_CACHE") or "~/.cache/ov-llm-server").expanduser()


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """A scratch folder next to ``final`` that becomes ``final`` only if the block succeeds."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_tiny_models(cache_root: Path | None = None) -> dict[str, Path]:
    """The tiny model as an HF folder and as OpenVINO IR folders, built once and cached.

    Returns ``{"hf": ..., "int8": ..., "fp16": ..., "int4": ...}``. Parallel callers (pytest
    workers) serialise on a file lock; the loser finds the winner's result.
    """
    from filelock import FileLock

    # Training is the slow part: a converter change re-converts but does not retrain.
    root = (cache_root or default_cache_root()) / f"tiny-{file_hash(Path(__file__))}"
    root.mkdir(parents=True, exist_ok=True)
    converter = _converter_hash()
    paths = {"hf": root / "hf", **{fmt: root / f"ir-{fmt}-{converter}" for fmt in IR_FORMATS}}
    with FileLock(str(root / ".lock"), timeout=1800):
        if not paths["hf"].is_dir():
            with building(paths["hf"]) as tmp:
                build_hf_model(tmp)
        for fmt in IR_FORMATS:
            if not paths[fmt].is_dir():
                with building(paths[fmt]) as tmp:
                    _export_ir(paths["hf"], tmp, fmt)
                    if fmt != "int4":  # int4 is lossy by design; it has to load, not to be exact
                        failures = verify_ir(tmp)
                        if failures:
                            raise RuntimeError(f"tiny {fmt} IR answers wrongly: {failures}")
    return paths


# CPUs with AVX512-BF16 run inference in bf16 by default, and their paged-attention kernel then
# refuses an f32 KV cache unless the inference precision is f32 as well.
F32_PROPERTIES: dict[str, str] = {"KV_CACHE_PRECISION": "f32", "INFERENCE_PRECISION_HINT": "f32"}


def generate_answers(
    ir_dir: Path, *, continuous_batching: bool = True, properties: dict[str, str] | None = None
) -> dict[str, str]:
    """Greedy answers of an IR folder to every dialogue, the way the server asks."""
    import openvino_genai as og

    config = og.GenerationConfig()
    config.max_new_tokens = 100
    config.do_sample = False
    # The prompts below are templated already; genai would otherwise template them again.
    config.apply_chat_template = False
    if continuous_batching:
        pipe: Any = og.ContinuousBatchingPipeline(
            str(ir_dir), og.SchedulerConfig(), "CPU", properties or {}
        )
    else:
        pipe = og.LLMPipeline(str(ir_dir), "CPU", **(properties or {}))
    tokenizer = pipe.get_tokenizer()
    names = list(DIALOGUES)
    prompts = [
        tokenizer.apply_chat_template(
            DIALOGUES[n]["messages"], add_generation_prompt=True, tools=DIALOGUES[n]["tools"]
        )
        for n in names
    ]
    if continuous_batching:
        results = pipe.generate(prompts, [config] * len(prompts))
        texts = [r.m_generation_ids[0] for r in results]
    else:
        texts = [pipe.generate(p, config) for p in prompts]
    return dict(zip(names, texts, strict=True))


def verify_ir(ir_dir: Path) -> dict[str, str]:
    """Dialogues answered wrongly by any pipeline configuration the server may use; {} is good."""
    failures = {}
    runs = {
        "ContinuousBatchingPipeline f32": (True, F32_PROPERTIES),
        "ContinuousBatchingPipeline default": (True, None),
        "LLMPipeline": (False, None),
    }
    for label, (cb, properties) in runs.items():
        answers = generate_answers(ir_dir, continuous_batching=cb, properties=properties)
        for name, text in answers.items():
            if text != DIALOGUES[name]["answer"]:
                failures[f"{name} ({label})"] = text
    return failures


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    paths = ensure_tiny_models()
    for key, path in paths.items():
        sys.stdout.write(f"{key}: {path}\n")
    sys.stdout.write(f"ready in {time.monotonic() - started:.1f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
