"""A registry entry's ``speculative`` field as its engine process needs it.

Runs in the HTTP process, which knows the registry: a draft model is named by its registry
entry and reaches the engine as a path. A draft that is not in the registry, or has no files,
leaves the model served without speculation and says why; a draft that is there but does not
load is the engine's to notice (it then loads the model without it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .engine.messages import Speculation
from .registry import ModelEntry, PromptLookup, resolve_model_path


def resolve_speculation(
    entry: ModelEntry | None, entries: Mapping[str, ModelEntry], registry_path: Path
) -> tuple[Speculation | None, str | None]:
    """The engine's speculation for ``entry``, and a warning when it asked for some in vain."""
    wanted = entry.speculative if entry is not None else None
    if wanted is None:
        return None, None
    if isinstance(wanted, PromptLookup):
        speculation = Speculation(
            "prompt_lookup", wanted.num_assistant_tokens, max_ngram_size=wanted.max_ngram_size
        )
        return speculation, None
    draft = entries.get(wanted.draft_model)
    off = "speculative decoding (draft) off"
    if draft is None:
        return None, f"{off}: the draft model '{wanted.draft_model}' is not in the registry"
    path = resolve_model_path(registry_path, draft)
    if not path.exists():
        return None, f"{off}: the draft model '{wanted.draft_model}' has no files at {path}"
    if path.suffix == ".gguf":
        return None, (
            f"{off}: the draft model '{wanted.draft_model}' is a GGUF file; GenAI reads a draft "
            "only as an OpenVINO IR folder (convert it with ov-convert-model)"
        )
    speculation = Speculation(
        "draft",
        wanted.num_assistant_tokens,
        draft_path=str(path),
        draft_device=wanted.draft_device,
    )
    return speculation, None
