"""Prometheus metrics, served on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_HOP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """One set of metrics per app, on its own registry so that tests can run several apps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ov_requests",
            "Requests (every endpoint) by model and HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "ov_time_to_first_token_seconds",
            "Time from request to its first token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "ov_time_per_output_token_seconds",
            "Mean time between output tokens of a request.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "ov_request_latency_seconds",
            "End-to-end latency of requests (every endpoint).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "ov_prompt_tokens",
            "Prompt (and embedding, rerank input) tokens processed.",
            ["model"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "ov_completion_tokens", "Tokens generated.", ["model"], registry=self.registry
        )
        self.encoder_batch = Histogram(
            "ov_encoder_batch_inputs",
            "Inputs of the embedding or rerank model call that served each request "
            "(dynamic batching: above the request's own inputs when requests shared a call).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "ov_queue_depth",
            "Requests waiting or running per loaded model.",
            ["model"],
            registry=self.registry,
        )
        self.engine_requests = Gauge(
            "ov_engine_requests",
            "Requests the HTTP process waits on an engine for, per loaded model (none may stay "
            "behind a request that ended).",
            ["model"],
            registry=self.registry,
        )
        self.load_seconds = Histogram(
            "ov_model_load_seconds",
            "Time to load (compile) a model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.engine_restarts = Counter(
            "ov_engine_restarts",
            "Engine processes that died (signal, crash, broken step, stall) and were restarted.",
            ["model"],
            registry=self.registry,
        )
        self.engine_hop = Histogram(
            "ov_engine_hop_seconds",
            "Time from an engine process sending a step's output to the HTTP process reading it.",
            buckets=_HOP_BUCKETS,
            registry=self.registry,
        )
        self.cancelled = Counter(
            "ov_cancelled_requests",
            "Requests cancelled because the client went away.",
            ["model"],
            registry=self.registry,
        )
        self.spec_draft_tokens = Counter(
            "ov_spec_draft_tokens",
            "Speculative decoding: draft tokens proposed (prompt lookup: positions validated, "
            "found in the prompt or not).",
            ["model"],
            registry=self.registry,
        )
        self.spec_accepted_tokens = Counter(
            "ov_spec_accepted_tokens",
            "Speculative decoding: draft tokens the model accepted.",
            ["model"],
            registry=self.registry,
        )

    def count_drafts(self, model: str, proposed: int, accepted: int) -> None:
        self.spec_draft_tokens.labels(model).inc(proposed)
        self.spec_accepted_tokens.labels(model).inc(accepted)

    def forget_model(self, model: str) -> None:
        """Drops the series that describe a loaded model (gauges), once it unloads."""
        for gauge in (self.queue_depth, self.engine_requests):
            try:
                gauge.remove(model)
            except KeyError:
                pass
