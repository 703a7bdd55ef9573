"""Small pieces of the converter checked against their definitions (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dear_local.errors import ConversionError, UserInputError


def _hf_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What HF's conversion script did to Meta's q/k weights (interleaved pairs -> halves)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@given(n_heads=st.integers(1, 4), half=st.integers(1, 4), cols=st.integers(0, 3))
def test_unpermute_qk_inverts_hf_permutation(n_heads, half, cols):
    from dear_local_convert.to_gguf.tensors import unpermute_qk

    shape = (n_heads * half * 2,) + ((cols,) if cols else ())
    w = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    assert np.array_equal(unpermute_qk(_hf_permute(w, n_heads), n_heads), w)


def test_unpermute_qk_interleaves_each_heads_halves():
    from dear_local_convert.to_gguf.tensors import unpermute_qk

    # one head, head_dim 4: rows [x0, x1, y0, y1] -> [x0, y0, x1, y1]
    assert unpermute_qk(np.array([0, 1, 2, 3]), 1).tolist() == [0, 2, 1, 3]


def test_llama3_rope_factors_match_transformers():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from dear_local_convert.to_gguf.arch import parse_params

    config = {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32,
        "num_key_value_heads": 8, "num_hidden_layers": 2, "intermediate_size": 14336, "vocab_size": 128256,
        "rope_theta": 500000.0, "max_position_embeddings": 131072,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    }  # fmt: skip
    p = parse_params(config)
    hf_cfg = LlamaConfig(**{k: v for k, v in config.items() if k != "architectures"})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, torch.device("cpu"))
    base = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float64) / 128))
    # llama.cpp divides each base frequency by rope_freqs
    np.testing.assert_allclose(p.rope_freqs(), (base / scaled.double()).numpy(), rtol=1e-5)
    assert p.rope_freqs().dtype == np.float32 and p.rope_freqs().shape == (64,)


def test_config_without_rope_scaling_has_no_rope_freqs():
    from dear_local_convert.to_gguf.arch import parse_params

    p = parse_params({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
                      "num_hidden_layers": 1, "intermediate_size": 128, "vocab_size": 100,
                      "rope_parameters": {"rope_type": "default", "rope_theta": 1e5}})  # fmt: skip
    assert p.rope_freqs() is None and p.rope_theta == 1e5 and p.n_head_kv == 4 and p.head_dim == 16


def test_unsupported_rope_scaling_is_refused():
    from dear_local_convert.to_gguf.arch import parse_params

    with pytest.raises(ConversionError, match="rope scaling type 'yarn'"):
        parse_params({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
                      "num_hidden_layers": 1, "intermediate_size": 128, "vocab_size": 100,
                      "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})  # fmt: skip


def test_pre_tokenizer_detection_by_structure():
    from dear_local_convert.to_gguf.tokenizer import LLAMA3_SPLIT, detect_pre_tokenizer

    llama3 = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    smollm = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}  # fmt: skip
    assert detect_pre_tokenizer({"pre_tokenizer": llama3}) == "llama-bpe"
    assert detect_pre_tokenizer({"pre_tokenizer": smollm}) == "smollm"
    with pytest.raises(ConversionError, match="--pre-tokenizer"):
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Whitespace"}})
    with pytest.raises(ConversionError, match="--pre-tokenizer"):
        detect_pre_tokenizer({"pre_tokenizer": llama3, "normalizer": {"type": "NFC"}})


def test_quant_types_are_normalised_and_checked():
    from dear_local_convert.quant.quantize import FTYPES, parse_types

    assert parse_types("q8_0, Q4_K_M,Q8_0") == ["Q8_0", "Q4_K_M"]
    with pytest.raises(UserInputError, match="unknown quant type.*Q9.*valid types: F32"):
        parse_types(["Q9"])
    # the llama_ftype values of llama.h (enum llama_ftype)
    assert {t: FTYPES[t] for t in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K", "BF16")} == {
        "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q4_K_M": 15, "IQ4_XS": 30, "Q3_K_M": 12, "Q2_K": 10, "BF16": 32}


def test_ftype_table_matches_llama_cpp_constants():
    llama_cpp = pytest.importorskip("llama_cpp")
    from dear_local_convert.quant.quantize import FTYPES

    for name, value in FTYPES.items():
        const = "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}"
        assert getattr(llama_cpp, const) == value, name


def test_quantize_params_are_set_by_field_name():
    llama_cpp = pytest.importorskip("llama_cpp")

    fields = {name for name, _ in llama_cpp.llama_model_quantize_params._fields_}
    assert {"nthread", "ftype", "allow_requantize", "quantize_output_tensor", "only_copy", "pure",
            "keep_split", "imatrix"} <= fields  # fmt: skip


def test_output_names_follow_the_store_layout(tmp_path):
    from dear_local_convert.to_gguf.writer import output_path
    from dear_local_convert.quant.quantize import output_file

    bf16 = output_path(tmp_path, "dear-8b-listwise", "bf16")
    assert bf16.name == "dear-8b-listwise-BF16.gguf"
    assert output_file(bf16, tmp_path, "Q4_K_M").name == "dear-8b-listwise-Q4_K_M.gguf"


# ggml's log levels in the llama.cpp that llama-cpp-python 0.3.36 vendors: DEBUG 1, INFO 2, WARN 3,
# ERROR 4, CONT 5 (a line that continues the previous message, at that message's level).
_LOG_LINES = st.lists(st.tuples(st.integers(1, 5), st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)), max_size=12)


@given(lines=_LOG_LINES)
def test_log_capture_keeps_exactly_the_error_messages(lines):
    """Every ERROR message is kept whole (its CONT lines joined), and nothing at any other level."""
    pytest.importorskip("llama_cpp")
    from dear_local_convert.llama_cpp_lib import LogCapture

    seen: list[str] = []
    capture = LogCapture(seen.append)
    want: list[str] = []
    level_of_message = 0
    for level, text in lines:
        capture._callback(level, text.encode("utf-8"), None)
        if level != 5:
            level_of_message = level
            if level == 4:
                want.append(text)
        elif level_of_message == 4 and want:
            want[-1] += text
    assert capture.errors == [w.strip() for w in want]
    assert seen == [t for _, t in lines]
