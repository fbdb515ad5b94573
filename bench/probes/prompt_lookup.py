"""Prompt lookup in the server's ContinuousBatchingPipeline: exactness, mixing, seeds, speed.

    PYTHONPATH=app:tests:bench python -m probes.prompt_lookup [--skip-speed]

1. Greedy output with ``{"prompt_lookup": True}`` (per request ``num_assistant_tokens`` 5,
   ``max_ngram_size`` 3) against the plain pipeline, token for token: the tiny test model's
   dialogues and SmolLM2 on the copy/edit and chat prompts.
2. Mixing: a request without the assistant fields in a prompt-lookup pipeline; a request with
   them in a plain pipeline.
3. Sampling: the same seed twice with prompt lookup; the same seed with and without it.
4. Speed (SmolLM2): copy/edit and chat prompts, 1 and 4 streams, with and without prompt
   lookup, interleaved in rounds so that a busy neighbour weighs on both alike; tokens per
   decode step do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import workloads

from probes import common
from probes.common import greedy, log

PL = {"num_assistant_tokens": 5, "max_ngram_size": 3}


def dialogue_prompts(tokenizer: Any) -> list[Any]:
    from tiny_model import DIALOGUES

    return [common.encode(tokenizer, d["messages"], d["tools"]) for d in DIALOGUES.values()]


def workload_prompts(tokenizer: Any, name: str, count: int) -> list[Any]:
    requests = workloads.load(name).requests[:count]
    return [common.encode(tokenizer, r.messages) for r in requests]


def exactness(label: str, plain: Any, lookup: Any, prompts: list[Any], max_tokens: int) -> bool:
    a, _ = common.run(plain, [(p, greedy(max_tokens)) for p in prompts])
    b, _ = common.run(lookup, [(p, greedy(max_tokens, **PL)) for p in prompts])
    same = [x.ids == y.ids for x, y in zip(a, b, strict=True)]
    accepted = sum(o.accepted for o in b)
    log.info(
        "%s: %d/%d greedy outputs identical with prompt lookup (%d tokens; %d of them were "
        "accepted lookups)",
        label,
        sum(same),
        len(same),
        sum(o.tokens for o in a),
        accepted,
    )
    for index, ok in enumerate(same):
        if not ok:
            log.info("  differs: prompt %d: %s vs %s", index, a[index].ids[:20], b[index].ids[:20])
    return all(same)


def mixing(plain: Any, lookup: Any, prompt: Any) -> None:
    outcome, _ = common.run(lookup, [(prompt, greedy(16))])
    log.info(
        "prompt-lookup pipeline, request without num_assistant_tokens/max_ngram_size: %s",
        f"refused: {outcome[0].error}" if outcome[0].error else f"ran ({outcome[0].tokens} tokens)",
    )
    ran, _ = common.run(plain, [(prompt, greedy(16, **PL))])
    ref, _ = common.run(plain, [(prompt, greedy(16))])
    log.info(
        "plain pipeline, request with them: %s; %s",
        ran[0].error or f"ran ({ran[0].tokens} tokens, {ran[0].accepted} accepted lookups)",
        "same tokens as without" if ran[0].ids == ref[0].ids else "DIFFERENT tokens",
    )
    # The cheapest request a prompt-lookup pipeline accepts: one lookup token, 1-grams.
    one, _ = common.run(lookup, [(prompt, greedy(16, num_assistant_tokens=1, max_ngram_size=1))])
    log.info(
        "prompt-lookup pipeline, num_assistant_tokens=1 max_ngram_size=1: %s",
        one[0].error or f"ran, same tokens as plain: {one[0].ids == ref[0].ids}",
    )


def seeds(plain: Any, lookup: Any, prompts: list[Any]) -> None:
    def sampled(pl: bool, seed: int) -> Any:
        fields: dict[str, Any] = {"do_sample": True, "temperature": 0.8, "top_p": 0.95}
        fields["rng_seed"] = seed
        return greedy(48, **fields, **(PL if pl else {}))

    for index, prompt in enumerate(prompts):
        one, _ = common.run(lookup, [(prompt, sampled(True, 42))])
        two, _ = common.run(lookup, [(prompt, sampled(True, 42))])
        other, _ = common.run(lookup, [(prompt, sampled(True, 43))])
        base, _ = common.run(plain, [(prompt, sampled(False, 42))])
        base2, _ = common.run(plain, [(prompt, sampled(False, 42))])
        log.info(
            "sampling, prompt %d: lookup seed 42 twice identical: %s; seed 43 differs: %s; "
            "plain seed 42 twice identical: %s; lookup vs plain, seed 42, identical: %s "
            "(first %d tokens shared)",
            index,
            one[0].ids == two[0].ids,
            one[0].ids != other[0].ids,
            base[0].ids == base2[0].ids,
            one[0].ids == base[0].ids,
            _shared_prefix(one[0].ids, base[0].ids),
        )


def _shared_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def speed(plain: Any, lookup: Any, tokenizer: Any, rounds: int) -> None:
    for name in ("copy_edit", "chat"):
        workload = workloads.load(name)
        prompts = [common.encode(tokenizer, r.messages) for r in workload.requests]
        for streams in (1, 4):
            totals = {"plain": [0, 0.0, 0], "lookup": [0, 0.0, 0]}
            same = True
            for round_index in range(rounds):
                order = ("plain", "lookup") if round_index % 2 == 0 else ("lookup", "plain")
                outputs: dict[str, list[common.Outcome]] = {}
                for mode in order:
                    pipe, extra = (plain, {}) if mode == "plain" else (lookup, PL)
                    cfg = greedy(workload.max_tokens, ignore_eos=workload.ignore_eos, **extra)
                    outcomes, wall = common.run(pipe, [(p, cfg) for p in prompts], streams)
                    outputs[mode] = outcomes
                    totals[mode][0] += sum(o.tokens for o in outcomes)
                    totals[mode][1] += wall
                    totals[mode][2] += sum(o.decode_steps for o in outcomes)
                same &= all(
                    a.ids == b.ids for a, b in zip(outputs["plain"], outputs["lookup"], strict=True)
                )
            rate = {mode: t[0] / t[1] for mode, t in totals.items()}
            per_step = {mode: (t[0] - len(prompts) * rounds) / t[2] for mode, t in totals.items()}
            log.info(
                "%s, %d stream(s), %d requests x %d rounds: plain %.1f tok/s, lookup %.1f tok/s: "
                "x%.2f; decode tokens per step per request %.2f vs %.2f; greedy text identical: %s",
                name,
                streams,
                len(prompts),
                rounds,
                rate["plain"],
                rate["lookup"],
                rate["lookup"] / rate["plain"],
                per_step["plain"],
                per_step["lookup"],
                same,
            )
    log.info("machine: %s", common.load_note())


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    log.info("machine: %s", common.load_note())

    tiny = common.tiny_model()
    plain, lookup = common.pipeline(tiny), common.pipeline(tiny, prompt_lookup=True)
    tokenizer = plain.get_tokenizer()
    exactness("tiny model, its dialogues", plain, lookup, dialogue_prompts(tokenizer), 96)
    mixing(plain, lookup, dialogue_prompts(tokenizer)[0])
    del plain, lookup

    smol = common.smollm2()
    plain, lookup = common.pipeline(smol), common.pipeline(smol, prompt_lookup=True)
    tokenizer = plain.get_tokenizer()
    for name in ("copy_edit", "chat"):
        prompts = workload_prompts(tokenizer, name, 6)
        exactness(f"SmolLM2, {name}", plain, lookup, prompts, 128)
    mixing(plain, lookup, workload_prompts(tokenizer, "chat", 1)[0])
    seeds(plain, lookup, workload_prompts(tokenizer, "copy_edit", 2))
    if not args.skip_speed:
        speed(plain, lookup, tokenizer, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
