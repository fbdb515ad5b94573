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

Prompt tokens: GenAI reports a request's image tokens only once it has finished. At load,
one image the model's own size is run through the pipeline to learn what an image adds to
a prompt beyond its tag; a request's images count that much each in the context-length
check and in its acknowledgement (exact for models that take every image at one size, as
LLaVA does; an estimate for models whose image tokens grow with the image). Its last
output carries the count GenAI reports, which the HTTP side puts in ``usage``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import openvino as ov
import openvino_genai as og

from ...textutil import one_line
from ..messages import EngineConfig, EngineFinish, Generate, Image, Output, PromptLogprob
from .llm import LlmRunner, RequestRefused, _Sequence

log = logging.getLogger("ov_llm_server.engine")


def image_tensor(image: Image) -> Any:
    """An image as GenAI's vision pipelines take it: uint8 ``[height, width, 3]``."""
    pixels = np.frombuffer(image.rgb, dtype=np.uint8).reshape(image.height, image.width, 3)
    return ov.Tensor(pixels.copy())


# The calibration request's id: the HTTP side numbers its requests from 1.
_CALIBRATION_RID = 0
_CALIBRATION_SIDE = 336


class VisionRunner(LlmRunner):
    """One vision-language model: chat requests with images, and text-only ones."""

    def __init__(self, path: Path, config: EngineConfig) -> None:
        super().__init__(path, config)
        self.image_tokens = self._measure_image_tokens()

    def _measure_image_tokens(self) -> int:
        """What one image adds to a prompt beyond its tag, as the pipeline counts it."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
        try:
            prompt = self._render(messages, True)
        except Exception as exc:
            warning = f"image tokens not counted before generation: {one_line(exc)}"
            log.warning("%s", warning)
            self.warnings.append(warning)
            return 0
        text_tokens = len(self.vocabulary.encode(prompt, add_special_tokens=False))
        config = og.GenerationConfig(max_new_tokens=1, do_sample=False)
        config.apply_chat_template = False
        side = _CALIBRATION_SIDE
        black = ov.Tensor(np.zeros((side, side, 3), dtype=np.uint8))
        # A VLM that cannot take an image of its own size is broken: its load fails here, with
        # GenAI's reason, rather than on its first image request.
        handle = self._pipe.add_request(_CALIBRATION_RID, prompt, [black], config)
        while self._pipe.has_non_finished_requests():
            self._pipe.step()
        total = int(handle.get_perf_metrics().get_num_input_tokens())
        return max(total - text_tokens, 0)

    def _prompt_tokens(self, request: Generate, ids: list[int]) -> int:
        return len(ids) + self.image_tokens * len(request.images or ())

    def _add_request(
        self, genai_id: int, request: Generate, prompt: str, ids: list[int], config: Any
    ) -> Any:
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
            return self._pipe.add_request(genai_id, prompt, tensors, config)
        except Exception as exc:
            # The pipeline takes nothing of a request it refuses: its images, or image tags
            # in its text that no image matches, are at fault, not the model.
            code, what = (
                ("invalid_image", "these images") if tensors else ("invalid_prompt", "this prompt")
            )
            raise RequestRefused(code, f"The model cannot take {what}: {one_line(exc)}") from exc

    def _finish(
        self,
        sequence: _Sequence,
        reason: EngineFinish,
        text: str,
        echoed: list[PromptLogprob] | None,
        error: str | None = None,
        *,
        cut: bool = False,
    ) -> Output:
        output = super()._finish(sequence, reason, text, echoed, error, cut=cut)
        try:
            prompt_tokens = int(sequence.handle.get_perf_metrics().get_num_input_tokens())
        except RuntimeError:  # a request cut short (stop sequence, error) has no metrics
            return output
        return msgspec.structs.replace(output, prompt_tokens=prompt_tokens)
