"""A vision-language model inside the engine process: chat with images, continuously batched.

GenAI's ``ContinuousBatchingPipeline`` loads a VLM folder (vision tower, text embeddings,
language model) as it loads an LLM, and its ``add_request(rid, prompt, images, config)``
takes a text prompt with images: so a vision model is stepped exactly as a text model is
(:class:`~.llm.LlmRunner`: the same steps, detokenizer, stop sequences, cancels and
failures), and only the way a request enters the pipeline differs. The images are encoded
by the vision tower inside ``add_request``, between steps.

Where the images go: the HTTP side sends each message's content as a list of parts, an
``{"type": "image"}`` part where the client put each image, and the model's own chat
template writes its native image tag there (LLaVA's ``<image>``, Qwen2-VL's
``<|vision_start|><|image_pad|><|vision_end|>``, ...). GenAI expands each native tag into
the image's tokens (for LLaVA: the patch tokens, then a newline of its own), taking the
images in order.

Prompt tokens: the image tokens are only known to GenAI. A request is acknowledged with
its text tokens; its last output carries the count GenAI reports for the whole prompt
(text and image tokens), which the HTTP side puts in ``usage``. The context-length check
at admission counts the text tokens only.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import numpy as np
import openvino as ov

from ...textutil import one_line
from ..messages import EngineFinish, Generate, Image, Output, PromptLogprob
from .llm import LlmRunner, RequestRefused, _Request

log = logging.getLogger("ov_llm_server.engine")


def image_tensor(image: Image) -> Any:
    """An image as GenAI's vision pipelines take it: uint8 ``[height, width, 3]``."""
    pixels = np.frombuffer(image.rgb, dtype=np.uint8).reshape(image.height, image.width, 3)
    return ov.Tensor(pixels.copy())


class VisionRunner(LlmRunner):
    """One vision-language model: chat requests with images, and text-only ones."""

    def _add_request(self, request: Generate, prompt: str, ids: list[int], config: Any) -> Any:
        if request.prompt_ids is not None:
            raise RequestRefused(
                "unsupported_value",
                "a vision model takes a text prompt; token ids are not supported",
            )
        if config.echo:
            raise RequestRefused(
                "unsupported_value", "a vision model cannot echo its prompt's log probabilities"
            )
        tensors = [image_tensor(image) for image in request.images or ()]
        try:
            return self._pipe.add_request(request.rid, prompt, tensors, config)
        except Exception as exc:
            # The pipeline takes nothing of a request it refuses: its images, or image tags
            # in its text that no image matches, are at fault, not the model.
            code, what = (
                ("invalid_image", "these images") if tensors else ("invalid_prompt", "this prompt")
            )
            raise RequestRefused(code, f"The model cannot take {what}: {one_line(exc)}") from exc

    def _finish(
        self,
        request: _Request,
        reason: EngineFinish,
        text: str,
        echoed: list[PromptLogprob] | None,
        error: str | None = None,
        *,
        cut: bool = False,
    ) -> Output:
        output = super()._finish(request, reason, text, echoed, error, cut=cut)
        try:
            prompt_tokens = int(request.handle.get_perf_metrics().get_num_input_tokens())
        except RuntimeError:  # a request cut short (stop sequence, error) has no metrics
            return output
        return msgspec.structs.replace(output, prompt_tokens=prompt_tokens)
