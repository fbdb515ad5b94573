"""OpenVINO GenAI driven in this process: the limit the server can reach.

:class:`DirectEngine` builds its ``ContinuousBatchingPipeline`` with the server's own code
(``build_pipeline``, the scheduler settings, speculation from the same ``EngineConfig``) and
gives each request the configuration the engine process would give it: the chat template
(with the tools a forced call shows the model), the model's generation defaults, the
assistant fields of a speculative model and the grammar of a forced tool call. It steps the
pipeline from one thread, as the engine process does, but detokenizes nothing.

:class:`DirectLLMPipeline` is ``LLMPipeline.generate`` with a token streamer, one stream: a
second reference for a single user.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openvino_genai as og
import workloads
from measure import Clock, LevelResult, RequestRecord, record, summarise

from ov_llm_server.engine.core.pipelines import build_pipeline
from ov_llm_server.engine.core.sampling import generation_config, model_defaults
from ov_llm_server.engine.core.speculation import DraftCounter, request_fields
from ov_llm_server.engine.messages import EngineConfig, SamplingParams
from ov_llm_server.output import plan_output
from ov_llm_server.protocol import ChatCompletionRequest


class DirectEngine:
    """The server's pipeline for one model and one ``EngineConfig``, stepped here."""

    _ids = itertools.count(1)

    def __init__(self, model: Path, config: EngineConfig, key: tuple[str, str]) -> None:
        self.key = key  # (variant, mode) in the results
        self.config = config
        self.pipe = build_pipeline(model, config)
        self.tokenizer = self.pipe.get_tokenizer()
        self.defaults = {
            **model_defaults(self.pipe.get_config()),
            **request_fields(config.speculative),
        }
        self.chat_template = str(self.tokenizer.chat_template or "")

    def prepare(self, request: workloads.Request, max_tokens: int, ignore_eos: bool) -> Any:
        """(input ids, GenerationConfig) as the engine process would make them."""
        body = ChatCompletionRequest.model_validate(
            {"model": "m", "max_tokens": max_tokens, **request.openai_fields()}
        )
        plan = plan_output(body, self.chat_template, None)
        prompt = self.tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, tools=plan.template_tools
        )
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).input_ids
        params = SamplingParams(
            max_new_tokens=max_tokens, temperature=0, ignore_eos=ignore_eos, grammar=plan.grammar
        )
        return ids, generation_config(params, self.defaults, max_tokens)

    def runner(self, workload: workloads.Workload) -> Any:
        def run(requests: list[workloads.Request], concurrency: int, _salt: str) -> LevelResult:
            prepared = [self.prepare(r, workload.max_tokens, workload.ignore_eos) for r in requests]
            return self.run(prepared, concurrency, workload.name)

        return run

    def run(self, prepared: list[Any], concurrency: int, workload: str) -> LevelResult:
        pending = deque(enumerate(prepared))
        active: dict[int, tuple[int, Any, float, list[float], list[int], int]] = {}
        counter = DraftCounter(self.config.speculative)
        records: list[RequestRecord] = []
        started, cpu = time.perf_counter(), time.process_time()
        while pending or active:
            while pending and len(active) < concurrency:
                index, (ids, cfg) = pending.popleft()
                request_id = next(self._ids)
                handle = self.pipe.add_request(request_id, ids, cfg)
                active[request_id] = (
                    index,
                    handle,
                    time.perf_counter(),
                    [],
                    [],
                    cfg.max_new_tokens,
                )
            self.pipe.step()
            now = time.perf_counter()
            for request_id, (index, handle, sent, stamps, out, budget) in list(active.items()):
                if handle.can_read():
                    for output in handle.read().values():
                        got = list(output.generated_ids)
                        counter.count(len(out), len(got), budget)
                        out += got
                        stamps.extend([now] * len(got))
                if handle.get_status() != og.GenerationStatus.RUNNING and not handle.can_read():
                    del active[request_id]
                    records.append(record(index, sent, stamps, tuple(out)))
        proposed, accepted = counter.take()
        clock = Clock(
            time.perf_counter() - started,
            time.process_time() - cpu,
            draft_tokens=proposed,
            accepted_tokens=accepted,
        )
        return summarise((workload, *self.key), concurrency, clock, records)


class TimingStreamer(og.StreamerBase):  # type: ignore[misc]
    """Notes when each token id arrives; decodes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def write(self, token: int | Sequence[int]) -> og.StreamingStatus:
        count = 1 if isinstance(token, int) else len(token)
        self.stamps.extend([time.perf_counter()] * count)
        return og.StreamingStatus.RUNNING

    def end(self) -> None:
        pass


class DirectLLMPipeline:
    """``LLMPipeline.generate`` with a streamer, one request at a time (chat-like workloads)."""

    key = ("plain", "llm_pipeline")

    def __init__(self, model: Path, device: str) -> None:
        self.pipe = og.LLMPipeline(str(model), device)
        self.tokenizer = self.pipe.get_tokenizer()

    def runner(self, workload: workloads.Workload) -> Any:
        def run(requests: list[workloads.Request], concurrency: int, _salt: str) -> LevelResult:
            cfg = self.pipe.get_generation_config()
            cfg.max_new_tokens = workload.max_tokens
            cfg.ignore_eos = workload.ignore_eos
            cfg.do_sample = False
            cfg.apply_chat_template = False
            inputs = [
                self.tokenizer.encode(
                    self.tokenizer.apply_chat_template(
                        list(r.messages), add_generation_prompt=True
                    ),
                    add_special_tokens=False,
                )
                for r in requests
            ]
            records = []
            started, cpu = time.perf_counter(), time.process_time()
            for index, tokenized in enumerate(inputs):
                streamer = TimingStreamer()
                sent = time.perf_counter()
                self.pipe.generate(tokenized, cfg, streamer)
                records.append(record(index, sent, streamer.stamps, ()))
            clock = Clock(time.perf_counter() - started, time.process_time() - cpu)
            return summarise((workload.name, *self.key), 1, clock, records)

        return run
