"""The converter on a miniature DeAR: a tiny random Llama-3.1 with the real Llama-3 tokenizer.

Acceptance: llama.cpp's F32 logits match transformers' fp32 logits at every
position of a several-hundred-token prompt, and both tokenizers give the same
ids on llama.cpp's test vectors and on every NovelEval `card` prompt.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dear_local.contract import get_template
from convert_fixtures import noveleval_windows, vocab_test_vectors
from optional import needs

pytestmark = needs("torch", "transformers", "llama_cpp")

GGML_TYPE_F32 = 0


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_llama3_dir):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(tiny_llama3_dir)


@pytest.fixture(scope="module")
def gguf_vocab(tiny_f32_gguf):
    from dear_local_convert.llama_cpp_lib import load_vocab

    with load_vocab(tiny_f32_gguf) as vocab:
        yield vocab


def _card_prompt(shared_dir, n_passages: int, q: int = 0) -> str:
    query, passages = noveleval_windows(shared_dir)[q]
    return get_template("card").render_raw(query, passages[:n_passages])


def _llama_logits(gguf_path, ids: list[int]) -> np.ndarray:
    # F32 KV cache: llama.cpp's default F16 cache alone moves logits by ~1e-3.
    from dear_local.backends.loader import open_llama

    llm, _ = open_llama(
        gguf_path, n_ctx=len(ids) + 16, n_batch=512, logits_all=True,
        type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, n_threads=2, verbose=False,
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _hf_logits(src_dir, ids: list[int]) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _assert_logits_match(got: np.ndarray, want: np.ndarray) -> None:
    scale = float(np.abs(want).max())
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-3 * scale, f"max abs diff {diff:.3g} > 1e-3 * max|logit| ({scale:.3g})"
    mismatched = np.flatnonzero(got.argmax(-1) != want.argmax(-1))
    assert mismatched.size == 0, f"argmax differs at positions {mismatched[:10].tolist()}"


def test_f32_logits_match_transformers_at_every_position(tiny_llama3_dir, tiny_f32_gguf, hf_tokenizer, shared_dir):
    ids = hf_tokenizer(_card_prompt(shared_dir, 5))["input_ids"]
    assert 300 <= len(ids) <= 600 and ids[0] == 128000
    _assert_logits_match(_llama_logits(tiny_f32_gguf, ids), _hf_logits(tiny_llama3_dir, ids))


def test_parity_check_catches_a_converter_without_rope_freqs(tiny_llama3_dir, hf_tokenizer, shared_dir, tmp_path, monkeypatch):
    """The parity test is sharp enough to see llama3 rope scaling go missing."""
    from dear_local_convert.to_gguf import arch, writer

    monkeypatch.setattr(arch.LlamaParams, "rope_freqs", lambda self: None)
    broken = writer.convert_checkpoint(tiny_llama3_dir, tmp_path, "f32", name="broken")
    ids = hf_tokenizer(_card_prompt(shared_dir, 5))["input_ids"]
    with pytest.raises(AssertionError):
        _assert_logits_match(_llama_logits(broken, ids), _hf_logits(tiny_llama3_dir, ids))


def test_token_ids_agree_on_llama_cpp_test_vectors(hf_tokenizer, gguf_vocab, shared_dir):
    vectors = vocab_test_vectors(shared_dir)
    assert len(vectors) == 47
    for text, expected in vectors:
        hf = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert hf == expected, f"transformers differs from the .out vector on {text!r}"
        assert gguf_vocab.tokenize(text) == expected, f"llama.cpp differs from the .out vector on {text!r}"


def test_token_ids_agree_on_every_noveleval_card_prompt(hf_tokenizer, gguf_vocab, shared_dir):
    card = get_template("card")
    windows = noveleval_windows(shared_dir)
    assert len(windows) == 21
    for query, passages in windows:
        prompt = card.render_raw(query, passages)
        hf = hf_tokenizer(prompt)["input_ids"]
        assert hf[0] == 128000
        assert gguf_vocab.tokenize(prompt, add_special=True) == hf


def test_both_end_tokens_stop_generation(gguf_vocab):
    assert gguf_vocab.is_eog(128009)  # <|eot_id|>: end of an instruct turn
    assert gguf_vocab.is_eog(128001)  # <|end_of_text|>
    assert not gguf_vocab.is_eog(128000)


def test_gguf_metadata_records_tokenizer_rope_and_provenance(tiny_f32_gguf):
    import gguf

    r = gguf.GGUFReader(tiny_f32_gguf)

    def val(key):
        return r.fields[key].contents()

    assert val("general.architecture") == "llama"
    assert val("general.name") == "tiny-llama3"
    assert val("general.file_type") == 0
    assert val("dear_local.source.repo") == "example/tiny-llama3"
    assert val("dear_local.source.revision") == "r1"
    assert val("tokenizer.ggml.model") == "gpt2"
    assert val("tokenizer.ggml.pre") == "llama-bpe"
    assert val("tokenizer.ggml.bos_token_id") == 128000
    assert val("tokenizer.ggml.eos_token_id") == 128001
    assert val("tokenizer.ggml.eot_token_id") == 128009
    assert val("tokenizer.ggml.add_bos_token") is True
    assert "<|start_header_id|>" in val("tokenizer.chat_template")
    assert len(r.fields["tokenizer.ggml.merges"].data) == 280147
    types = r.fields["tokenizer.ggml.token_type"]
    type_of = {i: int(types.parts[types.data[i]][0]) for i in (0, 128000, 128009)}
    assert type_of == {0: gguf.TokenType.NORMAL, 128000: gguf.TokenType.CONTROL, 128009: gguf.TokenType.CONTROL}

    tensors = {t.name: t for t in r.tensors}
    assert "output.weight" in tensors  # untied embeddings
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    freqs = np.asarray(tensors["rope_freqs.weight"].data)
    assert freqs.shape == (16,) and freqs[0] == 1.0 and freqs[-1] == 8.0


def test_bf16_output_is_bit_exact_with_the_checkpoint(tiny_llama3_dir, tmp_path):
    """BF16 output keeps every weight bit (after undoing the q/k permutation)."""
    import gguf
    import torch
    from safetensors import safe_open

    from dear_local_convert.to_gguf.writer import convert_checkpoint
    from dear_local_convert.to_gguf.tensors import unpermute_qk

    out = convert_checkpoint(tiny_llama3_dir, tmp_path, "bf16", name="tiny", verify_tokenizer=False)
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    index = json.loads((tiny_llama3_dir / "model.safetensors.index.json").read_text())["weight_map"]

    def hf(name):
        with safe_open(tiny_llama3_dir / index[name], framework="pt") as f:
            return f.get_tensor(name).view(torch.int16).numpy().view(np.uint16)

    def gg(name):
        t = tensors[name]
        return np.asarray(t.data).view(np.uint16).reshape(hf_shape[name])

    hf_shape = {}
    pairs = {
        "blk.1.ffn_down.weight": "model.layers.1.mlp.down_proj.weight",
        "token_embd.weight": "model.embed_tokens.weight",
        "output.weight": "lm_head.weight",
    }
    for g, h in pairs.items():
        hf_shape[g] = hf(h).shape
        assert np.array_equal(gg(g), hf(h))
    hf_shape["blk.0.attn_k.weight"] = hf("model.layers.0.self_attn.k_proj.weight").shape
    assert np.array_equal(gg("blk.0.attn_k.weight"), unpermute_qk(hf("model.layers.0.self_attn.k_proj.weight"), 2))
    assert tensors["blk.0.ffn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_transformers5_config_style_converts_to_the_same_rope(tiny_llama3_dir, tmp_path):
    """A config with `rope_parameters` (transformers 5) gives the same hyperparameters as the 4.x style."""
    from dear_local_convert.to_gguf.arch import parse_params, read_config

    old = read_config(tiny_llama3_dir)
    new = {k: v for k, v in old.items() if k not in ("rope_theta", "rope_scaling")}
    new["rope_parameters"] = {"rope_theta": old["rope_theta"], **old["rope_scaling"]}
    a, b = parse_params(old), parse_params(new)
    assert a == b
    assert np.array_equal(a.rope_freqs(), b.rope_freqs())
