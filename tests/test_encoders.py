"""Embedding and rerank models (engine/core/encoders.py) on the tiny encoders, against
references on the same weights: sentence-transformers for vectors, transformers for scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ov_llm_server.encoder_config import (
    EmbeddingConfig,
    EncoderConfigError,
    detect_task,
    embedding_config_from_hf,
    load_embedding_config,
    rerank_config_from_hf,
)
from ov_llm_server.engine.core.encoders import (
    EmbeddingModel,
    EncoderInputError,
    InputTooLong,
    RerankModel,
)
from ov_llm_server.engine.core.precision import effective_precision, hint_properties
from tiny_encoders import (
    DOCUMENTS,
    MAX_SEQ_LENGTH,
    PROMPTS,
    QUERIES,
    reference_embeddings,
    reference_model,
    reference_scores,
)
from tolerances import order_agrees, score_tolerance

TEXTS = DOCUMENTS + QUERIES
LONG_TEXT = "the quick brown fox jumps over the lazy dog " * 8  # about 80 tokens


def cosines(a: Any, b: Any) -> Any:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ---------------------------------------------------------------- units: reading the files


def write_st_folder(
    root: Path,
    *,
    pooling: dict[str, Any],
    modules: list[str] | None = None,
    st_model: dict[str, Any] | None = None,
) -> Path:
    kinds = modules or ["Transformer", "Pooling", "Normalize"]
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    entries = [
        {"idx": i, "name": str(i), "path": paths.get(k, f"{i}_{k}"), "type": f"st.models.{k}"}
        for i, k in enumerate(kinds)
    ]
    (root / "1_Pooling").mkdir(parents=True)
    (root / "modules.json").write_text(json.dumps(entries))
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if st_model is not None:
        (root / "config_sentence_transformers.json").write_text(json.dumps(st_model))
    return root


HF = {"hidden_size": 32, "max_position_embeddings": 512, "architectures": ["BertModel"]}


def test_pooling_is_read_in_both_the_legacy_and_the_current_form(tmp_path: Path) -> None:
    legacy = write_st_folder(
        tmp_path / "a",
        pooling={"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True},
    )
    config = embedding_config_from_hf(legacy, HF)
    assert (config.pooling, config.normalize, config.dimension) == ("mean", True, 32)
    assert config.max_length == 512  # no sentence_bert_config.json: the position table
    current = write_st_folder(
        tmp_path / "b",
        pooling={"embedding_dimension": 32, "pooling_mode": "lasttoken"},
        modules=["Transformer", "Pooling"],
    )
    config = embedding_config_from_hf(current, HF)
    assert (config.pooling, config.normalize) == ("last_token", False)
    (current / "sentence_bert_config.json").write_text('{"max_seq_length": 256}')
    assert embedding_config_from_hf(current, HF).max_length == 256


@pytest.mark.parametrize(
    ("pooling", "modules", "st_model", "message"),
    [
        ({"pooling_mode": "max"}, None, None, "pooling mode 'max' is not supported"),
        (
            {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True},
            None,
            None,
            "only one of cls, mean, lasttoken",
        ),
        ({"pooling_mode": "mean"}, ["Transformer", "Pooling", "Dense"], None, "modules Dense"),
        (
            {"pooling_mode": "mean"},
            None,
            {"prompts": {"query": "q: "}, "default_prompt_name": "passage"},
            "default prompt 'passage' is not among",
        ),
        (
            {"pooling_mode": "mean", "include_prompt": False},
            None,
            {"prompts": {"query": "q: "}},
            "include_prompt false",
        ),
    ],
)
def test_what_the_pipeline_cannot_do_is_refused(
    tmp_path: Path,
    pooling: dict[str, Any],
    modules: list[str] | None,
    st_model: dict[str, Any] | None,
    message: str,
) -> None:
    folder = write_st_folder(tmp_path, pooling=pooling, modules=modules, st_model=st_model)
    with pytest.raises(EncoderConfigError, match=message):
        embedding_config_from_hf(folder, HF)


def test_plain_transformers_model_gets_defaults_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 1000000000000000}')
    config = embedding_config_from_hf(tmp_path, {**HF, "is_matryoshka": True})
    assert (config.pooling, config.normalize, config.source) == ("mean", True, "default")
    assert config.max_length == 512  # "no limit" in the tokenizer config is not a limit
    assert config.matryoshka_dimensions == []


def test_task_detection_and_reranker_labels(tmp_path: Path) -> None:
    classifier = {"architectures": ["BertForSequenceClassification"], "num_labels": 1}
    assert detect_task(tmp_path, classifier, "chat") == "text-classification"
    assert detect_task(tmp_path, HF, "chat") == "chat"
    write_st_folder(tmp_path, pooling={"pooling_mode": "cls"})
    assert detect_task(tmp_path, HF, "chat") == "feature-extraction"
    config = rerank_config_from_hf(
        tmp_path, {**classifier, "type_vocab_size": 2, "max_position_embeddings": 512}
    )
    assert (config.num_labels, config.activation, config.token_type_ids) == (1, "sigmoid", True)
    two = {"id2label": {"0": "no", "1": "yes"}, "max_position_embeddings": 514}
    assert rerank_config_from_hf(tmp_path, two).activation == "softmax"
    with pytest.raises(EncoderConfigError, match="3 labels"):
        rerank_config_from_hf(tmp_path, {"num_labels": 3, "max_position_embeddings": 8})


# ---------------------------------------------------------------- embeddings, real inference


@pytest.fixture(scope="module")
def embedder(tiny_encoders: dict[str, Path]) -> EmbeddingModel:
    # In f32, as the server runs embedders on a CPU (placement.choose_precision).
    return EmbeddingModel(
        tiny_encoders["embedder-mean/fp16"], "CPU", properties=hint_properties("f32")
    )


@pytest.fixture(scope="module")
def cls_embedder(tiny_encoders: dict[str, Path]) -> EmbeddingModel:
    return EmbeddingModel(
        tiny_encoders["embedder-cls/fp16"], "CPU", properties=hint_properties("f32")
    )


@pytest.fixture(scope="module")
def reference(tiny_encoders: dict[str, Path]) -> Any:
    return reference_embeddings(tiny_encoders["embedder-mean/hf"], TEXTS)


@pytest.mark.slow
def test_recorded_config_is_what_the_files_say(tiny_encoders: dict[str, Path]) -> None:
    mean = load_embedding_config(tiny_encoders["embedder-mean/fp16"])
    assert mean == EmbeddingConfig(
        pooling="mean",
        normalize=True,
        max_length=MAX_SEQ_LENGTH,
        dimension=64,
        prompts=PROMPTS,
        matryoshka_dimensions=[64, 32, 16],
    )
    cls = load_embedding_config(tiny_encoders["embedder-cls/fp16"])
    assert (cls.pooling, cls.normalize, cls.prompts) == ("cls", False, {})


@pytest.mark.slow
def test_vectors_match_sentence_transformers(
    embedder: EmbeddingModel, reference: Any, tiny_encoders: dict[str, Path]
) -> None:
    from transformers import AutoTokenizer

    result = embedder.embed(TEXTS)
    assert result.vectors.shape == (len(TEXTS), 64) and result.vectors.dtype == np.float32
    assert cosines(result.vectors, reference).min() >= 0.999
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    # No two texts' reference vectors are as close as the match above requires, so that a
    # mix-up would fail it. (The tiny model's vocabulary, and so how alike its texts look,
    # varies from build to build: the WordPiece trainer breaks frequency ties at random.)
    pairwise = cosines(np.repeat(reference, len(TEXTS), 0), np.tile(reference, (len(TEXTS), 1)))
    off_diagonal = pairwise.reshape(len(TEXTS), len(TEXTS))[~np.eye(len(TEXTS), dtype=bool)]
    assert off_diagonal.max() < 0.999
    # Usage counts what the model reads, [CLS] and [SEP] included.
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoders["embedder-mean/hf"]))
    assert result.token_counts == [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    assert result.prompt_tokens == sum(result.token_counts)


@pytest.mark.slow
def test_cls_pooling_without_normalize_is_read_from_the_files(
    cls_embedder: EmbeddingModel, embedder: EmbeddingModel, tiny_encoders: dict[str, Path]
) -> None:
    reference = reference_embeddings(tiny_encoders["embedder-cls/hf"], TEXTS)
    vectors = cls_embedder.embed(TEXTS).vectors
    assert cosines(vectors, reference).min() >= 0.999
    norms = np.linalg.norm(vectors, axis=1)
    assert np.allclose(norms, np.linalg.norm(reference, axis=1), rtol=1e-3)
    assert abs(norms - 1).min() > 0.1  # not normalised
    # Same weights, other pooling: other vectors.
    assert cosines(vectors, embedder.embed(TEXTS).vectors).max() < 0.99


@pytest.mark.slow
def test_prompts_are_the_models_own(
    embedder: EmbeddingModel, tiny_encoders: dict[str, Path]
) -> None:
    reference = reference_embeddings(tiny_encoders["embedder-mean/hf"], QUERIES, "query")
    plain = embedder.embed(QUERIES)
    prompted = embedder.embed(QUERIES, prompt_name="query")
    assert cosines(prompted.vectors, reference).min() >= 0.999
    assert cosines(plain.vectors, reference).max() < 0.999
    added = [p - q for p, q in zip(prompted.token_counts, plain.token_counts, strict=True)]
    assert added == [2] * len(QUERIES)  # "query" and ":"
    with pytest.raises(EncoderInputError, match="unknown prompt 'passage'"):
        embedder.embed(QUERIES, prompt_name="passage")


@pytest.mark.slow
def test_batched_equals_single(embedder: EmbeddingModel) -> None:
    """What the engine's dynamic batching does: each request's inputs, one run, split."""
    requests = [[LONG_TEXT[:40]], DOCUMENTS[:3], [QUERIES[0]], DOCUMENTS[3:] + QUERIES[1:]]
    single = [embedder.embed(texts, truncate=True).vectors for texts in requests]
    inputs = [embedder.inputs(texts) for texts in requests]
    batched, _ = embedder.run([text for texts in inputs for text in texts])
    offsets = np.cumsum([0] + [len(texts) for texts in inputs])
    for index, vectors in enumerate(single):
        part = batched[offsets[index] : offsets[index + 1]]
        assert np.abs(part - vectors).max() < 1e-5
    small = EmbeddingModel(embedder.path, "CPU", max_batch=2)  # chunked calls, same vectors
    (chunked, chunked_counts), (whole, counts) = small.run(TEXTS), embedder.run(TEXTS)
    assert np.abs(chunked - whole).max() < 1e-5 and chunked_counts == counts


@pytest.mark.slow
def test_over_length_is_refused_or_truncated(
    embedder: EmbeddingModel, tiny_encoders: dict[str, Path]
) -> None:
    with pytest.raises(InputTooLong) as refused:
        embedder.embed([QUERIES[0], LONG_TEXT])
    assert (refused.value.index, refused.value.max_length) == (1, MAX_SEQ_LENGTH)
    assert refused.value.tokens > MAX_SEQ_LENGTH
    assert "input 1 has" in str(refused.value) and refused.value.param == "input"
    truncated = embedder.embed([QUERIES[0], LONG_TEXT], truncate=True)
    assert truncated.token_counts[1] == MAX_SEQ_LENGTH
    # sentence-transformers truncates to max_seq_length as well.
    reference = reference_embeddings(tiny_encoders["embedder-mean/hf"], [LONG_TEXT])
    assert cosines(truncated.vectors[1:], reference).min() >= 0.999


@pytest.mark.slow
def test_matryoshka_dimensions(
    embedder: EmbeddingModel, cls_embedder: EmbeddingModel, reference: Any
) -> None:
    cut = embedder.embed(TEXTS, dimensions=32).vectors
    assert cut.shape == (len(TEXTS), 32)
    assert np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    assert cosines(cut, reference[:, :32]).min() >= 0.999
    assert embedder.embed(TEXTS, dimensions=64).vectors.shape == (len(TEXTS), 64)
    with pytest.raises(EncoderInputError, match="must be one of 64, 32, 16") as wrong:
        embedder.embed(TEXTS, dimensions=20)
    assert wrong.value.param == "dimensions"
    with pytest.raises(EncoderInputError, match="does not support 'dimensions'"):
        cls_embedder.embed(TEXTS, dimensions=32)
    cls_embedder.check_dimensions(64)  # the full size is always fine


@pytest.mark.slow
def test_token_id_inputs(embedder: EmbeddingModel, tiny_encoders: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoders["embedder-mean/hf"]))
    with_specials = [tokenizer(t)["input_ids"] for t in TEXTS]
    without = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    text_vectors = embedder.embed(TEXTS).vectors
    for ids in (with_specials, without):
        result = embedder.embed(token_ids=ids)
        assert result.token_counts == [len(i) for i in with_specials]
        assert cosines(result.vectors, text_vectors).min() >= 0.9999
    with pytest.raises(EncoderInputError, match="token id 100000, outside"):
        embedder.inputs(token_ids=[[5, 100000]])
    with pytest.raises(EncoderInputError, match="input 1 is an empty token array"):
        embedder.inputs(token_ids=[[5], []])
    with pytest.raises(InputTooLong):
        embedder.embed(token_ids=[[10] * (MAX_SEQ_LENGTH + 1)])


@pytest.mark.slow
@pytest.mark.parametrize("hint", ["f32", "bf16"])
def test_int8_vectors_stay_close(tiny_encoders: dict[str, Path], reference: Any, hint: str) -> None:
    model = EmbeddingModel(
        tiny_encoders["embedder-mean/int8"], "CPU", properties=hint_properties(hint)
    )
    # bf16 is computed only where the CPU has it; elsewhere the plugin runs f32.
    allowed = score_tolerance(effective_precision("CPU", hint), base=0.001)
    assert cosines(model.embed(TEXTS).vectors, reference).min() >= 1 - allowed


# ---------------------------------------------------------------- rerank, real inference


@pytest.mark.slow
@pytest.mark.parametrize("weight_format", ["fp16", "int8"])
@pytest.mark.parametrize("hint", ["f32", "bf16"])
def test_rerank_matches_transformers(
    tiny_encoders: dict[str, Path], weight_format: str, hint: str
) -> None:
    from transformers import AutoTokenizer

    path = tiny_encoders[f"reranker/{weight_format}"]
    model = RerankModel(path, "CPU", properties=hint_properties(hint))
    assert model.config.token_type_ids and model.max_length == MAX_SEQ_LENGTH
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoders["reranker/hf"]))
    # bf16 is computed only where the CPU has it; elsewhere the plugin runs f32.
    precision = effective_precision("CPU", hint)
    base = 0.005 if weight_format == "fp16" else 0.05  # int8 weights: a few %
    tolerance = score_tolerance(precision, base)
    for query in QUERIES:
        result = model.score(query, DOCUMENTS)
        expected = reference_scores(tiny_encoders["reranker/hf"], query, DOCUMENTS)
        assert order_agrees(result.scores, expected, tolerance)
        assert np.abs(np.array(result.scores) - expected).max() < tolerance
        pairs = tokenizer([query] * len(DOCUMENTS), DOCUMENTS)
        assert result.token_count == sum(len(ids) for ids in pairs["input_ids"])


@pytest.mark.slow
def test_rerank_chunks_truncates_and_takes_no_documents(tiny_encoders: dict[str, Path]) -> None:
    path = tiny_encoders["reranker/fp16"]
    whole = RerankModel(path, "CPU").score(QUERIES[0], DOCUMENTS)
    chunked = RerankModel(path, "CPU", max_batch=2).score(QUERIES[0], DOCUMENTS)
    assert np.abs(np.array(whole.scores) - chunked.scores).max() < 1e-5
    assert whole.token_count == chunked.token_count
    model = RerankModel(path, "CPU", properties=hint_properties("f32"))
    long = model.score(QUERIES[0], [LONG_TEXT])
    assert long.token_count == MAX_SEQ_LENGTH
    expected = reference_scores(tiny_encoders["reranker/hf"], QUERIES[0], [LONG_TEXT])
    assert abs(long.scores[0] - expected[0]) < score_tolerance("f32", base=0.005)
    assert model.score(QUERIES[0], []) == type(long)([], 0)


@pytest.mark.slow
def test_tokenizer_without_token_type_ids_is_refused(
    tiny_encoders: dict[str, Path], tmp_path: Path
) -> None:
    """What optimum writes when the HF tokenizer does not list token_type_ids: GenAI's own
    pipeline then fails inside the CPU plugin; RerankModel says why instead."""
    import openvino as ov
    import openvino_genai as og
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    folder = tmp_path / "reranker"
    shutil.copytree(tiny_encoders["reranker/fp16"], folder)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoders["reranker/hf"]))
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    ov.save_model(convert_tokenizer(tokenizer), folder / "openvino_tokenizer.xml")

    pipe = og.TextRerankPipeline(str(folder), "CPU")
    with pytest.raises(RuntimeError, match="Add"):
        pipe.rerank(QUERIES[0], DOCUMENTS)
    with pytest.raises(EncoderConfigError, match="takes token_type_ids but its tokenizer"):
        RerankModel(folder, "CPU")


# ------------------------------------------------ segment ids, as transformers feeds them


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reranker", "reranker-no-segments"])
def test_reranker_ir_takes_what_transformers_feeds(
    tiny_encoders: dict[str, Path], name: str
) -> None:
    """The converted IR runs on exactly the inputs transformers' own tokenizer gives: with
    segment ids when it lists them, and without when it does not (BERT then sees zeros)."""
    import openvino as ov
    import torch
    from transformers import AutoTokenizer

    hf = tiny_encoders[f"{name}/hf"]
    tokenizer = AutoTokenizer.from_pretrained(str(hf))
    batch = tokenizer([QUERIES[0]] * len(DOCUMENTS), DOCUMENTS, padding=True, return_tensors="np")
    model = ov.Core().read_model(tiny_encoders[f"{name}/fp16"] / "openvino_model.xml")
    assert {port.get_any_name() for port in model.inputs} == set(batch)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled(dict(batch))[0][:, 0]
    reference = reference_model(hf, fp16_weights=True)
    with torch.no_grad():
        expected = reference(**batch.convert_to_tensors("pt")).logits[:, 0].numpy()
    # Measured: 2e-6 at most (fp16 weights against transformers' float32 ones: 3e-3).
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_rerank_without_segment_ids_matches_transformers(tiny_encoders: dict[str, Path]) -> None:
    path = tiny_encoders["reranker-no-segments/fp16"]
    model = RerankModel(path, "CPU", properties=hint_properties("f32"))
    assert not model.config.token_type_ids
    # f32 agrees with transformers to about 1e-6 (summation order only).
    tolerance = score_tolerance("f32", base=1e-4)
    for query in QUERIES:
        scores = model.score(query, DOCUMENTS).scores
        hf = tiny_encoders["reranker-no-segments/hf"]
        expected = reference_scores(hf, query, DOCUMENTS, fp16_weights=True)
        assert np.argsort(scores).tolist() == np.argsort(expected).tolist()
        np.testing.assert_allclose(scores, expected, rtol=tolerance, atol=0)
