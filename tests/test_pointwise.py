"""Pointwise rankers (DeAR-P): the input contract, conversion of LlamaForSequenceClassification,
and scoring through llama.cpp embeddings against transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local.contract.pointwise import get_pointwise_template, longest_first
from dear_local.errors import ConversionError, UnknownTemplateError, UserInputError
from dear_local.gguf_file import POINTWISE, Keys
from optional import needs

TEMPLATE = get_pointwise_template("dear-p")


# -- the contract (no model) ----------------------------------------------------------------------


def _tokenizers_cut(n_a: int, n_b: int, max_length: int) -> tuple[int, int]:
    """What the ``tokenizers`` library itself keeps of two segments under the DeAR-P pair template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({"<bos>": 0, "a": 1, "b": 2}, unk_token="<bos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B:1", special_tokens=[("<bos>", 0)]
    )
    tok.enable_truncation(max_length=max_length, strategy="longest_first")
    enc = tok.encode(" ".join(["a"] * n_a), " ".join(["b"] * n_b))
    return enc.ids.count(1), enc.ids.count(2)


@settings(max_examples=120, deadline=None)
@given(n_a=st.integers(1, 400), n_b=st.integers(1, 400), max_length=st.integers(4, 300))
def test_longest_first_cuts_a_pair_as_the_tokenizers_library_does(n_a, n_b, max_length):
    assert longest_first(n_a, n_b, max_length - 2) == _tokenizers_cut(n_a, n_b, max_length)


def test_the_dear_p_template_is_the_model_cards_pair():
    assert TEMPLATE.texts("What is llama?", "The llama is a camelid", "Llama") == (
        "query: What is llama?", "document: Llama The llama is a camelid",
    )
    # simple_rerank.py writes f"document: {title} {passage}": no title leaves two spaces
    assert TEMPLATE.texts("q", "p")[1] == "document:  p"
    assert (TEMPLATE.max_length, TEMPLATE.segment_prefix, TEMPLATE.pooling) == (228, "bos", "last")
    with pytest.raises(UnknownTemplateError, match="dear-p"):
        get_pointwise_template("no-such")


@pytest.mark.parametrize(
    "labels", [{"num_labels": 2}, {"id2label": {"0": "NO", "1": "YES"}}, {}, {"id2label": {"0": "a", "1": "b", "2": "c"}}]
)
def test_a_classifier_with_other_than_one_label_is_refused_by_name(labels):
    from dear_local_convert.to_gguf.arch import parse_params
    from dear_local_convert.standins.tiny_llama3 import POINTWISE_CONFIG

    config = {k: v for k, v in POINTWISE_CONFIG.items() if k not in ("id2label", "label2id")} | labels
    with pytest.raises(ConversionError, match=r"labels; dear-local converts pointwise rankers with one label"):
        parse_params(config)


def test_one_label_is_a_pointwise_ranker_and_a_causal_model_is_not():
    from dear_local_convert.to_gguf.arch import parse_params
    from dear_local_convert.standins.tiny_llama3 import CONFIG, POINTWISE_CONFIG

    assert parse_params(POINTWISE_CONFIG).pointwise and not parse_params(POINTWISE_CONFIG).needs_output
    assert not parse_params(CONFIG).pointwise and parse_params(CONFIG).needs_output


def _header_only_gguf(path: Path, **strings: str) -> Path:
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    for key, value in strings.items():
        w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


@needs("gguf", "llama_cpp")
def test_a_pointwise_file_where_a_listwise_model_is_expected_is_one_line_naming_it(tmp_path):
    from dear_local.backends.llama import LlamaCppBackend

    path = _header_only_gguf(tmp_path / "p.gguf", **{Keys.KIND: POINTWISE})
    with pytest.raises(UserInputError, match=r"p\.gguf is a pointwise ranker \(DeAR-P\)"):
        LlamaCppBackend(path)


@needs("gguf", "llama_cpp")
def test_a_listwise_file_where_a_pointwise_ranker_is_expected_is_one_line_naming_it(tmp_path):
    from dear_local.backends.pointwise import PointwiseModel

    path = _header_only_gguf(tmp_path / "l.gguf", **{"general.name": "listwise"})
    with pytest.raises(UserInputError, match=r"l\.gguf is not a pointwise ranker"):
        PointwiseModel(path)
    for bad in (0, 257, 2.0, True):
        with pytest.raises(UserInputError, match="1 to 256 documents per call"):
            PointwiseModel(path, batch=bad)


# -- the tiny pointwise ranker: conversion and scoring ------------------------------------------


def _pairs(n_queries: int = 3, n_passages: int = 10):
    from dear_local_convert.slices import load_slice

    sl = load_slice("noveleval", queries=n_queries, passages=n_passages)
    return [(q.text, list(q.passages)) for q in sl.queries]


def _hf(tiny_pointwise_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pointwise_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_pointwise_dir, dtype=torch.float32).eval()
    return tok, model


def _hf_scores(model, sequences) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.array([model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in sequences])


@needs("torch", "transformers", "gguf", "llama_cpp")
def test_the_converted_ranker_reads_the_same_ids_and_scores_as_transformers(tiny_pointwise_dir, tiny_pointwise_gguf):
    """F32 GGUF against transformers fp32 on NovelEval pairs: the tokenizer's own pair ids, scores
    within 1e-3 relative (F32 KV cache; llama.cpp's default F16 one stays within 1e-2), the same
    order, and the same scores to rounding whatever the number of documents per call."""
    from dear_local.backends.pointwise import PointwiseModel
    from dear_local.gguf_file import read_header

    tok, model = _hf(tiny_pointwise_dir)
    header = read_header(tiny_pointwise_gguf, arrays={Keys.POINTWISE_HEAD})
    head = model.score.weight.detach().float().numpy().reshape(-1)
    assert np.array_equal(np.asarray(header.get(Keys.POINTWISE_HEAD), dtype=np.float32), head)
    assert "output.weight" not in {t.name for t in header.tensors}

    with PointwiseModel(tiny_pointwise_gguf, batch=1, kv_f32=True) as one, \
         PointwiseModel(tiny_pointwise_gguf, batch=8, kv_f32=True) as eight, \
         PointwiseModel(tiny_pointwise_gguf, batch=8) as f16_kv:
        for query, passages in _pairs():
            ids = [one.pair_ids(query, p) for p in passages]
            assert ids == [tok(*TEMPLATE.texts(query, p), truncation=True, max_length=228)["input_ids"] for p in passages]
            ref = _hf_scores(model, ids)
            got = one.score(query, passages)
            scale = np.max(np.abs(ref))
            assert np.max(np.abs(got - ref)) <= 1e-3 * scale
            assert list(np.argsort(-got, kind="stable")) == list(np.argsort(-ref, kind="stable"))
            # 8 documents per call change the matrix shapes llama.cpp multiplies, not the result beyond rounding
            assert np.max(np.abs(eight.score_ids(ids) - got)) <= 1e-5 * scale
            assert np.max(np.abs(f16_kv.score_ids(ids) - ref)) <= 1e-2 * scale


@needs("torch", "transformers", "gguf", "llama_cpp")
def test_long_pairs_are_cut_as_the_tokenizer_cuts_them(tiny_pointwise_dir, tiny_pointwise_gguf):
    """Queries and documents longer than the 228-token pair, in any mix, give the tokenizer's own ids."""
    from dear_local.backends.pointwise import PointwiseModel

    tok, _ = _hf(tiny_pointwise_dir)
    words = "the llama camelid Edison invented bulb 1879 über naïve 東京 of , . ?".split()
    rng = np.random.default_rng(0)
    with PointwiseModel(tiny_pointwise_gguf) as pm:
        for n_q, n_d in [(3, 500), (150, 150), (400, 5), (120, 90), (0, 0)]:
            q = " ".join(rng.choice(words, n_q))
            d = " ".join(rng.choice(words, n_d))
            title = "A title" if n_q % 2 else ""
            want = tok(*TEMPLATE.texts(q, d, title), truncation=True, max_length=228)["input_ids"]
            got = pm.pair_ids(q, d, title)
            assert got == want and len(got) <= 228


@needs("torch", "transformers", "gguf", "llama_cpp")
def test_quantizing_keeps_the_head_and_the_order(tiny_pointwise_gguf, tmp_path):
    from scipy.stats import kendalltau

    from dear_local.backends.pointwise import PointwiseModel
    from dear_local.gguf_file import read_header
    from dear_local_convert.quant.quantize import quantize

    quantize(tiny_pointwise_gguf, ["Q8_0"], tmp_path)
    q8 = next(tmp_path.glob("*-Q8_0.gguf"))
    h32 = read_header(tiny_pointwise_gguf, arrays={Keys.POINTWISE_HEAD})
    h8 = read_header(q8, arrays={Keys.POINTWISE_HEAD})
    for key in (Keys.KIND, Keys.POINTWISE_TEMPLATE, Keys.POINTWISE_HEAD):
        assert h8.get(key) == h32.get(key)
    with PointwiseModel(tiny_pointwise_gguf) as f32, PointwiseModel(q8) as p8:
        for query, passages in _pairs(2, 20):
            assert kendalltau(f32.score(query, passages), p8.score(query, passages)).statistic >= 0.8


@needs("torch", "transformers", "gguf")
def test_a_sequence_classifier_without_its_head_is_refused(tiny_pointwise_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from dear_local_convert.to_gguf.writer import convert_checkpoint

    src = tmp_path / "no-head"
    shutil.copytree(tiny_pointwise_dir, src)
    for shard in src.glob("*.safetensors"):
        tensors = load_file(shard)
        tensors.pop("score.weight", None)
        save_file(tensors, shard, metadata={"format": "pt"})
    index = src / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"].pop("score.weight", None)
        index.write_text(json.dumps(data))
    with pytest.raises(ConversionError, match="has no score.weight"):
        convert_checkpoint(src, tmp_path / "out", "f32")
