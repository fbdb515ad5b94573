"""``POST /v1/chat/completions``: messages in, the model's answer (content, reasoning, tool
calls, log probabilities) out, as ``chat.completion`` or its chunks."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from .. import errors
from ..engine.messages import Generate, Output, TokenLogprob
from ..model_manager import LoadedModel
from ..output import OutputParser, ParsedDelta, plan_output
from ..protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ResponseFunctionCall,
    ResponseMessage,
    ResponseToolCall,
)
from ..protocol import (
    TokenLogprob as WireTokenLogprob,
)
from .common import Record
from .generation import GenerationService, GenerationWork, sampling
from .images import IMAGE_PART, check_images, decode_images, image_parts, vision_content


class ChatService(GenerationService):
    endpoint = "/v1/chat/completions"
    log_name = "completion"
    prompt_param = "messages"

    def check(self, body: Any) -> None:
        assert isinstance(body, ChatCompletionRequest)
        if body.top_logprobs:
            raise errors.bad_request(
                "top_logprobs must be 0: OpenVINO GenAI gives the chosen token's log "
                "probability only, no alternatives (logprobs: true alone gives that)",
                param="top_logprobs",
                code="unsupported_value",
            )
        if len(body.messages) > self.settings.max_messages:
            raise errors.bad_request(
                f"Too many messages ({len(body.messages)}); at most "
                f"{self.settings.max_messages} are accepted",
                param="messages",
            )
        for i, message in enumerate(body.messages):
            if isinstance(message.content, list):
                for part in message.content:
                    if part.type not in ("text", IMAGE_PART):
                        raise errors.bad_request(
                            f"Content part type '{part.type}' is not supported; "
                            "this server takes text and image_url parts",
                            param=f"messages.{i}.content",
                        )
        check_images(body.messages, self.settings)
        super().check(body)

    def compiles(self, body: Any) -> bool:
        return bool(body.tools) or body.response_format is not None

    def work(self, body: Any, model: LoadedModel) -> GenerationWork:
        assert isinstance(body, ChatCompletionRequest)
        # What the model must produce, and every refusal of it, before the engine sees anything.
        plan = plan_output(
            body,
            model.engine.chat_template,
            model.entry,
            compile_seconds=self.settings.schema_compile_seconds,
        )
        messages = [template_message(m) for m in body.messages]
        images = None
        if model.engine.kind == "vlm":
            images = decode_images(body.messages, self.settings)
            for message, source in zip(messages, body.messages, strict=True):
                message["content"] = vision_content(source)
        elif parts := image_parts(body.messages):
            raise errors.bad_request(
                f"The model '{model.name}' does not read images; send image_url parts to a "
                "vision model",
                param=parts[0][0],
                code="images_unsupported",
            )
        max_new = body.requested_max_tokens() or self.settings.default_max_tokens
        params = sampling(
            body,
            max_new,
            list(body.stop or ()),
            grammar=plan.grammar,
            shortest_answer=plan.shortest_answer,
            logprobs=body.logprobs,
        )

        def build(rid: int) -> Generate:
            return Generate(
                rid, params, messages=messages, tools=plan.template_tools, images=images
            )

        def answer(accepted: Output) -> ChatAnswer:
            return ChatAnswer(plan.parser(accepted.prompt_tail or ""), body.logprobs)

        return build, answer


class ChatAnswer:
    """Chat deltas: reasoning, content and whole tool calls, as the parser reads them."""

    chunk_object: ClassVar[str] = "chat.completion.chunk"

    def __init__(self, parser: OutputParser, logprobs: bool) -> None:
        self._parser = parser
        self._parsed = ParsedDelta()
        self._tool_calls = 0
        self._logprobs: list[TokenLogprob] | None = [] if logprobs else None
        self._unsent: list[TokenLogprob] = []  # logprobs not streamed yet
        self._stop: str | None = None  # the stop sequence that ended the answer

    @property
    def done(self) -> bool:
        return self._parser.done

    def opening(self) -> list[dict[str, Any]]:
        # No content yet: a tool-call-only answer streams none, as its whole response has null.
        return [_choice({"role": "assistant"})]

    def feed(self, output: Output, last: bool) -> list[dict[str, Any]]:
        parsed = self._parser.feed(output.text)
        if last:
            parsed.merge(self._parser.finish())
            self._stop = output.stop
        self._parsed.merge(parsed)
        self._tool_calls += len(parsed.tool_calls)
        if self._logprobs is not None and output.logprobs:
            self._logprobs += output.logprobs
            self._unsent += output.logprobs
        choices = [_choice(delta) for delta in _delta_dicts(parsed)]
        if choices and self._unsent:
            # A token's text may be held back by the parser: its log probability rides with
            # the next chunk that says something (or the last one).
            choices[0]["logprobs"] = _logprobs(self._unsent)
            self._unsent = []
        return choices

    def finish_reason(self, engine_finish: str) -> str:
        # A document or call the server had to close was cut (by max_tokens, or a stop
        # sequence): say so, as OpenAI says "length" for a cut answer, even for a tool call.
        if self._parser.closed:
            return engine_finish
        if self._tool_calls:
            return "tool_calls"
        # A parser that is done holds a whole answer (the model ended it within its budget).
        return "stop" if self._parser.done else engine_finish

    def closing(self, finish: str) -> dict[str, Any]:
        choice = _choice({}, finish)
        if stop := self._stop_reason(finish):
            choice["stop_reason"] = stop
        if self._unsent:
            choice["logprobs"] = _logprobs(self._unsent)
            self._unsent = []
        return choice

    def body(self, record: Record, finish: str) -> dict[str, Any]:
        parsed = self._parsed
        message = ResponseMessage(
            content=parsed.content if (parsed.content or not parsed.tool_calls) else None,
            reasoning_content=parsed.reasoning or None,
            tool_calls=[
                ResponseToolCall(
                    id=tc.id, function=ResponseFunctionCall(name=tc.name, arguments=tc.arguments)
                )
                for tc in parsed.tool_calls
            ]
            or None,
        )
        logprobs = None
        if self._logprobs is not None:
            logprobs = ChoiceLogprobs(
                content=[WireTokenLogprob.of(text, lp) for text, lp in self._logprobs]
            )
        completion = ChatCompletion(
            id=record.completion_id,
            created=record.created,
            model=record.model,
            choices=[
                Choice(
                    message=message,
                    finish_reason=finish,
                    logprobs=logprobs,
                    stop_reason=self._stop_reason(finish),
                )
            ],
            usage=record.usage(),
        )
        answer = completion.model_dump(exclude_none=True)
        # OpenAI sends content null (not nothing) beside tool calls; clients read it.
        answer["choices"][0]["message"].setdefault("content", None)
        answer["choices"][0].setdefault("logprobs", None)
        return answer

    def _stop_reason(self, finish: str) -> str | None:
        # An answer that ends in tool calls says so, whatever cut the text after them.
        return self._stop if finish == "stop" else None


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [WireTokenLogprob.of(t, lp).model_dump() for t, lp in entries]}


def _delta_dicts(parsed: ParsedDelta) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if parsed.reasoning:
        out.append({"reasoning_content": parsed.reasoning})
    if parsed.content:
        out.append({"content": parsed.content})
    # A forced call as it is written: its id and name, then its arguments piece by piece.
    for piece in parsed.call_pieces:
        if piece.name is not None:
            out.append(_call_start(piece.index, piece.id or "", piece.name))
        elif piece.arguments:
            out.append(_call_arguments(piece.index, piece.arguments))
    # A free call goes out whole once it has closed and validated.
    for call in parsed.tool_calls:
        if not call.streamed:
            out.append(_call_start(call.index, call.id, call.name))
            out.append(_call_arguments(call.index, call.arguments))
    return out


def _call_start(index: int, call_id: str, name: str) -> dict[str, Any]:
    function = {"name": name, "arguments": ""}
    call = {"index": index, "id": call_id, "type": "function", "function": function}
    return {"content": None, "tool_calls": [call]}


def _call_arguments(index: int, arguments: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}


def template_message(message: ChatMessage) -> dict[str, Any]:
    """A message as the chat template reads it."""
    role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
    out: dict[str, Any] = {"role": role, "content": message.text()}
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments_object(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    return out


def _arguments_object(arguments: str | dict[str, Any]) -> Any:
    # Chat templates serialise arguments themselves (`| tojson`): give them the object.
    if isinstance(arguments, dict):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
