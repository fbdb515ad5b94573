"""Tiny real encoders, built on this machine: two sentence-transformers embedders and two rerankers.

No model hub is reachable, so the tests build their own: a WordPiece vocabulary trained with
``tokenizers`` on local text and wrapped in ``PreTrainedTokenizerFast`` (BERT's normaliser,
``[CLS] a [SEP] b [SEP]`` pairs with token type ids), and 2-layer BERTs with random weights
under a fixed seed:

- ``embedder-mean``: ``BertModel`` in the sentence-transformers layout (``modules.json``, mean
  pooling written in the legacy ``pooling_mode_*_tokens`` form, a ``Normalize`` module, query
  and document prompts, Matryoshka dimensions declared vLLM's way in ``config.json``);
- ``embedder-cls``: the same weights with CLS pooling in the current ``pooling_mode`` form and
  no ``Normalize``: its vectors differ only if the converter really reads the pooling files;
- ``reranker``: ``BertForSequenceClassification`` with one label, the ms-marco MiniLM layout
  (its tokenizer lists ``token_type_ids``: transformers feeds the pair template's segment ids);
- ``reranker-no-segments``: the same architecture whose tokenizer does not list
  ``token_type_ids`` (transformers' generic tokenizer class, as a tokenizer built with
  ``tokenizers`` is saved): transformers runs it on the model's all-zero segment ids although
  it has a segment table and its pair template writes segment 1. Its classifier is drawn so
  that the pair template's segment ids would rank the sample documents differently.

The weights are drawn wider than BERT's default (see ``INITIALIZER_RANGE``). They mean
nothing, but a reference computed on the same weights (transformers,
sentence-transformers) makes exact comparisons possible. Everything is converted by
``ov-convert-model``'s own workflow and cached by a hash of this file and of the converter.

Run ``python tests/tiny_encoders.py`` to build (or find) the cache and print where it is.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tiny_model import building, default_cache_root, file_hash

log = logging.getLogger(__name__)

SEED = 4321
VOCAB_SIZE = 600
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Short on purpose: over-length inputs are easy to write.
MAX_SEQ_LENGTH = 48
EMBEDDING_DIM = 64
MATRYOSHKA_DIMS = [64, 32, 16]
PROMPTS = {"query": "query: ", "document": "passage: "}
# BERT's default init (0.02) makes every input look alike: logits of different pairs agree
# to 1e-4 and embeddings of different texts to a cosine of about 0.99, so neither a wrong
# order nor a wrong vector would show. At 0.2 the logits spread by about 1 (fp16 weights move
# them by under 0.01) and different texts get clearly different vectors.
INITIALIZER_RANGE = 0.2
# int8 weights move the logits by a few hundredths.
MIN_LOGIT_GAP = 0.1

BERT_CONFIG: dict[str, Any] = {
    "hidden_size": EMBEDDING_DIM,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 128,
    "type_vocab_size": 2,
    "initializer_range": INITIALIZER_RANGE,
}

CORPUS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with one step.
Paris is the capital of France. Berlin is the capital of Germany. Rome is the capital of Italy.
Cats are small mammals that purr. Dogs bark at the mailman. Whales swim in the deep ocean.
The weather today is sunny with a light breeze; tomorrow it may rain in the north.
Machine learning models turn text into vectors, and vectors into answers.
A search engine ranks documents by how well they answer the query.
Bread is made of flour, water, salt and yeast. Coffee grows on trees in warm countries.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: . , ! ? : ; ( ) - / '
What is the capital of France? Which animal purrs? How is bread made?
Where do whales live? Tell me about the weather. Who barks at the mailman?
"""

QUERIES = ["What is the capital of France?", "Which animal purrs?", "How is bread made?"]
DOCUMENTS = [
    "Paris is the capital of France.",
    "Cats are small mammals that purr.",
    "Bread is made of flour, water, salt and yeast.",
    "Whales swim in the deep ocean.",
    "The weather today is sunny with a light breeze.",
]

# name -> (the task ov-convert-model should detect, the weight formats it converts to)
MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "embedder-mean": ("feature-extraction", ("fp16", "int8")),
    "embedder-cls": ("feature-extraction", ("fp16",)),
    "reranker": ("text-classification", ("fp16", "int8")),
    "reranker-no-segments": ("text-classification", ("fp16",)),
}
SEGMENTED_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]


def build_tokenizer(input_names: list[str] = SEGMENTED_INPUTS) -> Any:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    wordpiece.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    cls_id, sep_id = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=MAX_SEQ_LENGTH,
        model_input_names=input_names,
    )


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _bert_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **BERT_CONFIG, **extra
    )


def build_embedder(out_dir: Path, pooling: str) -> Path:
    """A sentence-transformers embedder: ``pooling`` is "mean" (+ Normalize) or "cls"."""
    import torch
    from transformers import BertModel

    torch.manual_seed(SEED)
    tokenizer = build_tokenizer()
    extra = {"matryoshka_dimensions": MATRYOSHKA_DIMS} if pooling == "mean" else {}
    model = BertModel(_bert_config(tokenizer, **extra), add_pooling_layer=False).eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)

    kinds = [("", "Transformer"), ("1_Pooling", "Pooling")]
    if pooling == "mean":
        kinds.append(("2_Normalize", "Normalize"))
        (out_dir / "2_Normalize").mkdir()
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(kinds)
    ]
    if pooling == "mean":
        # The legacy form most published models still carry.
        pooling_config: dict[str, Any] = {
            "word_embedding_dimension": EMBEDDING_DIM,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        }
    else:
        pooling_config = {"embedding_dimension": EMBEDDING_DIM, "pooling_mode": "cls"}
    _write_json(out_dir / "modules.json", modules)
    _write_json(out_dir / "1_Pooling" / "config.json", pooling_config)
    _write_json(
        out_dir / "sentence_bert_config.json",
        {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False},
    )
    _write_json(
        out_dir / "config_sentence_transformers.json",
        {
            "prompts": PROMPTS if pooling == "mean" else {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    return out_dir


def build_reranker(out_dir: Path, segments: bool = True) -> Path:
    """A BERT cross-encoder with a segment table and one relevance logit; ``segments``: its
    tokenizer gives transformers the pair template's token type ids.

    The classifier is the first draw whose logits for each sample query are at least
    ``MIN_LOGIT_GAP`` apart, so that "the same order as the reference" is decided by the model,
    not by rounding; its bias centres the logits, which spreads the scores over (0, 1). Without
    ``segments`` the draw must also rank some query's documents otherwise when the segment ids
    are fed, so that a server feeding them cannot pass for transformers.
    """
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(SEED)
    tokenizer = build_tokenizer(SEGMENTED_INPUTS if segments else ["input_ids", "attention_mask"])
    config = _bert_config(tokenizer, num_labels=1)
    config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    model = BertForSequenceClassification(config).eval()
    pairs = [(q, d) for q in QUERIES for d in DOCUMENTS]
    batch = tokenizer(
        [q for q, _ in pairs], [d for _, d in pairs], padding=True, return_tensors="pt"
    )
    segmented = tokenizer(
        [q for q, _ in pairs],
        [d for _, d in pairs],
        padding=True,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    shape = (len(QUERIES), len(DOCUMENTS))
    with torch.no_grad():
        pooled = model.bert(**batch).pooler_output
        pooled_segmented = model.bert(**segmented).pooler_output
        for _ in range(1000):
            weight = torch.randn(1, pooled.shape[1]) * INITIALIZER_RANGE
            logits = (pooled @ weight.T).reshape(shape)
            if float(logits.sort(dim=1).values.diff(dim=1).min()) < MIN_LOGIT_GAP:
                continue
            other = (pooled_segmented @ weight.T).reshape(shape)
            if segments or not torch.equal(logits.argsort(dim=1), other.argsort(dim=1)):
                break
        else:
            raise RuntimeError(f"no classifier gives sample logits {MIN_LOGIT_GAP} apart")
        model.classifier.weight.copy_(weight)
        model.classifier.bias.fill_(-float(logits.mean()))
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_hf_model(name: str, out_dir: Path) -> Path:
    if name.startswith("reranker"):
        return build_reranker(out_dir, segments=name == "reranker")
    return build_embedder(out_dir, pooling=name.removeprefix("embedder-"))


# ---------------------------------------------------------------- references on the same weights


def reference_embeddings(hf_dir: Path, texts: list[str], prompt_name: str | None = None) -> Any:
    """sentence-transformers' own vectors (float32 numpy, one row per text)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(hf_dir), device="cpu")
    return model.encode(texts, prompt_name=prompt_name, convert_to_numpy=True)


def reference_model(hf_dir: Path, *, fp16_weights: bool = False) -> Any:
    """The cross-encoder in transformers (float32). ``fp16_weights``: its weight matrices
    rounded to float16 as in an fp16 IR; the vectors stay as they are (optimum keeps the
    classifier's bias in float32, and the tiny models' other biases and norms are zeros and
    ones, which rounding leaves alone)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(hf_dir)).eval()
    if fp16_weights:
        with torch.no_grad():
            for weight in model.parameters():
                if weight.dim() > 1:
                    weight.copy_(weight.half().float())
    return model


def reference_scores(
    hf_dir: Path, query: str, documents: list[str], *, fp16_weights: bool = False
) -> list[float]:
    """transformers' logits through the model's activation (sigmoid), one per document, with
    the inputs its own tokenizer gives. ``fp16_weights``: on the weights an fp16 IR holds."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = reference_model(hf_dir, fp16_weights=fp16_weights)
    batch = tokenizer(
        [query] * len(documents), documents, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits[:, 0]
    return [float(x) for x in torch.sigmoid(logits)]


# ---------------------------------------------------------------- cache


def _converter_hash() -> str:
    import ov_llm_server.convert as convert_package

    folder = Path(convert_package.__file__).parent
    return file_hash(*sorted(folder.glob("*.py")))


def _convert_all(hf_dirs: dict[str, Path], root: Path) -> None:
    """Every model through ov-convert-model's workflow, the task detected from its files."""
    from ov_llm_server.convert.export import ExportOptions
    from ov_llm_server.convert.workflow import Layout, convert

    layout = Layout(models_dir=root, registry_path=root / "converted_models" / "registry.json")
    for name, hf_dir in hf_dirs.items():
        shutil.copytree(hf_dir, root / name)
        for weight_format in MODELS[name][1]:
            options = ExportOptions(weight_format=weight_format)  # type: ignore[arg-type]
            convert(layout, name, options)


def ensure_tiny_encoders(cache_root: Path | None = None) -> dict[str, Path]:
    """``{"<name>/hf": HF folder, "<name>/<format>": IR folder, "registry": registry.json}``."""
    from filelock import FileLock

    from ov_llm_server.convert.workflow import Layout, output_dir

    root = (cache_root or default_cache_root()) / f"encoders-{file_hash(Path(__file__))}"
    root.mkdir(parents=True, exist_ok=True)
    hf_dirs = {name: root / "hf" / name for name in MODELS}
    converted = root / f"models-{_converter_hash()}"
    with FileLock(str(root / ".lock"), timeout=1800):
        for name, path in hf_dirs.items():
            if not path.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True)
                with building(path) as tmp:
                    build_hf_model(name, tmp)
        if not converted.is_dir():
            with building(converted) as tmp:
                _convert_all(hf_dirs, tmp)
    registry = converted / "converted_models" / "registry.json"
    layout = Layout(models_dir=converted, registry_path=registry)
    paths: dict[str, Path] = {"registry": registry}
    for name, (task, formats) in MODELS.items():
        paths[f"{name}/hf"] = hf_dirs[name]
        for weight_format in formats:
            paths[f"{name}/{weight_format}"] = output_dir(layout, name, task, weight_format)
    return paths


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    for key, path in ensure_tiny_encoders().items():
        sys.stdout.write(f"{key}: {path}\n")
    sys.stdout.write(f"ready in {time.monotonic() - started:.1f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
