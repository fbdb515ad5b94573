"""A draft model in the server's ContinuousBatchingPipeline: plumbing, devices, acceptance.

    PYTHONPATH=app:tests:bench python -m probes.draft [--skip-speed]

1. The tiny test model as its own draft: greedy output token for token against the plain
   pipeline, and every draft token accepted (an exact check of the plumbing).
2. Requests without ``num_assistant_tokens`` in a draft pipeline; the draft's own
   ``SchedulerConfig`` and properties through ``og.draft_model(path, device, **kwargs)``;
   a draft on another device ("GPU", which this machine lacks: the error shows whether the
   device string reaches a separate compile).
3. SmolLM2 with the shallow draft of bench/draft_model.py: exactness, acceptance, speed.
4. Sampling with a seed, with and without the draft.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import openvino_genai as og
import workloads

from probes import common
from probes.common import greedy, log

K = 5


def exactness(label: str, plain: Any, drafted: Any, prompts: list[Any], max_tokens: int) -> None:
    a, wall_a = common.run(plain, [(p, greedy(max_tokens)) for p in prompts])
    b, wall_b = common.run(
        drafted, [(p, greedy(max_tokens, num_assistant_tokens=K)) for p in prompts]
    )
    same = sum(x.ids == y.ids for x, y in zip(a, b, strict=True))
    steps = sum(o.decode_steps for o in b)
    decode_tokens = sum(o.tokens - 1 for o in b)
    accepted = sum(o.accepted for o in b)
    log.info(
        "%s: %d/%d greedy outputs identical with the draft; %d decode tokens in %d steps "
        "(%.2f per step); accepted %d of about %d proposed (%.0f %%); wall %.2f s plain, "
        "%.2f s with the draft",
        label,
        same,
        len(prompts),
        decode_tokens,
        steps,
        decode_tokens / max(steps, 1),
        accepted,
        steps * K,
        100 * accepted / max(steps * K, 1),
        wall_a,
        wall_b,
    )


def plumbing(tiny: Any) -> None:
    plain = common.pipeline(tiny)
    tokenizer = plain.get_tokenizer()
    from tiny_model import DIALOGUES

    prompts = [common.encode(tokenizer, d["messages"], d["tools"]) for d in DIALOGUES.values()]
    drafted = common.pipeline(tiny, draft_model=og.draft_model(str(tiny), "CPU"))
    exactness("tiny model drafting for itself", plain, drafted, prompts, 96)

    try:
        outcome, _ = common.run(drafted, [(prompts[3], greedy(64))])
        log.info(
            "draft pipeline, request without num_assistant_tokens: %s",
            outcome[0].error
            or f"ran, {outcome[0].tokens} tokens, {outcome[0].accepted} accepted draft tokens",
        )
    except Exception as exc:  # noqa: BLE001 - a probe reports what GenAI refuses
        log.info(
            "draft pipeline, request without num_assistant_tokens: add_request accepted it, "
            "then step() raised: %s",
            common._one_line(exc),
        )
        try:
            after, _ = common.run(drafted, [(prompts[1], greedy(32, num_assistant_tokens=K))])
            log.info(
                "  the same pipeline afterwards: %s",
                after[0].error or f"ran, {after[0].tokens} tokens, status {after[0].status}",
            )
        except Exception as again:  # noqa: BLE001
            log.info("  the same pipeline afterwards: step() raises: %s", common._one_line(again))
        drafted = common.pipeline(tiny, draft_model=og.draft_model(str(tiny), "CPU"))
    sched = common.scheduler()
    sched.max_num_seqs = 4
    own = og.draft_model(str(tiny), "CPU", scheduler_config=sched, KV_CACHE_PRECISION="f16")
    try:
        pipe = common.pipeline(tiny, draft_model=own)
        out, _ = common.run(pipe, [(prompts[3], greedy(64, num_assistant_tokens=K))])
        log.info(
            "draft with its own SchedulerConfig and KV_CACHE_PRECISION f16: ran, %d accepted",
            out[0].accepted,
        )
    except Exception as exc:  # noqa: BLE001 - a probe reports what GenAI refuses
        log.info("draft with its own SchedulerConfig: refused: %s", common._one_line(exc))
    try:
        common.pipeline(tiny, draft_model=og.draft_model(str(tiny), "GPU"))
        log.info("draft on GPU, main on CPU: built")
    except Exception as exc:  # noqa: BLE001
        log.info("draft on GPU, main on CPU: %s", common._one_line(exc))
    try:
        common.pipeline(tiny, prompt_lookup=True, draft_model=og.draft_model(str(tiny), "CPU"))
        log.info("draft and prompt lookup together: built")
    except Exception as exc:  # noqa: BLE001
        log.info("draft and prompt lookup together: %s", common._one_line(exc))


def seeds(plain: Any, drafted: Any, prompt: Any) -> None:
    def sampled(seed: int, draft: bool) -> Any:
        extra = {"num_assistant_tokens": K} if draft else {}
        return greedy(48, do_sample=True, temperature=0.8, top_p=0.95, rng_seed=seed, **extra)

    one, _ = common.run(drafted, [(prompt, sampled(42, True))])
    two, _ = common.run(drafted, [(prompt, sampled(42, True))])
    other, _ = common.run(drafted, [(prompt, sampled(43, True))])
    base, _ = common.run(plain, [(prompt, sampled(42, False))])
    log.info(
        "sampling with the draft: seed 42 twice identical: %s; seed 43 differs: %s; "
        "identical to the plain pipeline's seed 42: %s",
        one[0].ids == two[0].ids,
        one[0].ids != other[0].ids,
        one[0].ids == base[0].ids,
    )


def smollm2(speed: bool) -> None:
    smol, draft = common.smollm2(), common.smollm2_draft()
    plain = common.pipeline(smol)
    tokenizer = plain.get_tokenizer()
    drafted = common.pipeline(smol, draft_model=og.draft_model(str(draft), "CPU"))
    chat = workloads.load("draft").requests
    prompts = [common.encode(tokenizer, r.messages) for r in chat[:6]]
    exactness(f"SmolLM2 with the draft {draft.name}", plain, drafted, prompts, 128)
    selfdraft = common.pipeline(smol, draft_model=og.draft_model(str(smol), "CPU"))
    exactness("SmolLM2 drafting for itself (upper bound)", plain, selfdraft, prompts[:3], 128)
    seeds(plain, drafted, prompts[0])
    if speed:
        everything = [common.encode(tokenizer, r.messages) for r in chat]
        for streams in (1, 4):
            walls = {"plain": 0.0, "draft": 0.0}
            tokens = {"plain": 0, "draft": 0}
            for round_index in range(2):
                order = ("plain", "draft") if round_index % 2 == 0 else ("draft", "plain")
                for mode in order:
                    pipe = plain if mode == "plain" else drafted
                    extra = {"num_assistant_tokens": K} if mode == "draft" else {}
                    cfg = greedy(128, ignore_eos=True, **extra)
                    out, wall = common.run(pipe, [(p, cfg) for p in everything], streams)
                    walls[mode] += wall
                    tokens[mode] += sum(o.tokens for o in out)
            plain_rate = tokens["plain"] / walls["plain"]
            draft_rate = tokens["draft"] / walls["draft"]
            log.info(
                "draft workload, %d stream(s): plain %.1f tok/s, with the draft %.1f tok/s (x%.2f)",
                streams,
                plain_rate,
                draft_rate,
                draft_rate / plain_rate,
            )
    log.info("machine: %s", common.load_note())


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args(argv)
    log.info("machine: %s", common.load_note())
    plumbing(common.tiny_model())
    if not args.skip_smollm2:
        smollm2(not args.skip_speed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
