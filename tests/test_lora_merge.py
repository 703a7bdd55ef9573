"""Merging a LoRA adapter while converting, against PEFT's own model.

Acceptance: the merged F32 GGUF and PEFT's model in transformers fp32 (adapter applied
unmerged, as its authors run it) read identical prompt ids and give logits within 1e-3
relative and the same argmax at every one of 2,100 positions; also with a non-default
target set (with per-module ranks and alphas), with rsLoRA, and on the SmolLM2 stand-in,
whose attention shapes differ (9 heads, 3 KV heads, head_dim 64).
"""

from __future__ import annotations

import pytest

from convert_fixtures import noveleval_windows
from lora_fixtures import compare_every_position, long_prompt_ids, peft_model
from optional import needs

pytestmark = needs("torch", "transformers", "peft", "llama_cpp")


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_llama3_dir):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(tiny_llama3_dir)


def _merged(base_dir, adapter, out_dir, name="merged"):
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    return convert_checkpoint(base_dir, out_dir, "f32", name=name, lora=adapter, verify_tokenizer=False)


def test_merged_f32_matches_peft_at_every_position(tiny_llama3_dir, tiny_lora, tiny_merged_f32, tiny_tokenizer, shared_dir):
    from dear_local_convert.llama_cpp_lib import load_vocab
    from dear_local.contract import get_template

    ids = long_prompt_ids(tiny_tokenizer, shared_dir)
    with load_vocab(tiny_merged_f32) as vocab:  # the same prompt ids on both sides
        q, p = noveleval_windows(shared_dir)[0]
        text = get_template("card").render_raw(q, p)
        assert vocab.tokenize(text, add_special=True) == tiny_tokenizer(text)["input_ids"]
    worst, mismatched = compare_every_position(tiny_merged_f32, peft_model(tiny_llama3_dir, tiny_lora), ids)
    assert worst <= 1e-3, f"max relative logit difference {worst:.3g}"
    assert mismatched == 0, f"argmax differs at {mismatched} of {len(ids)} positions"


def test_the_comparison_sees_an_unmerged_base(tiny_llama3_dir, tiny_lora, tiny_tokenizer, shared_dir, tmp_path):
    """The adapter moves the logits far beyond the tolerance, so a merge that did nothing would fail."""
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    base = convert_checkpoint(tiny_llama3_dir, tmp_path, "f32", name="base", verify_tokenizer=False)
    ids = long_prompt_ids(tiny_tokenizer, shared_dir, n=256)
    worst, mismatched = compare_every_position(base, peft_model(tiny_llama3_dir, tiny_lora), ids)
    assert worst > 0.1 and mismatched > 100


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(
            {"target_modules": ["k_proj", "o_proj", "down_proj"], "r": 8, "alpha": 8,
             "rank_pattern": {"o_proj": 4}, "alpha_pattern": {"down_proj": 24}, "layers_to_transform": [1]},
            id="k-o-down-layer1-patterns",
        ),
        pytest.param({"target_modules": ["q_proj", "v_proj"], "r": 16, "alpha": 32, "use_rslora": True}, id="rslora"),
    ],
)
def test_other_target_sets_and_rslora_match_peft(config, tiny_llama3_dir, tiny_tokenizer, shared_dir, tmp_path):
    from dear_local_convert.standins.lora import random_lora
    from dear_local_convert.lora.adapter import read_adapter

    adapter = random_lora(tiny_llama3_dir, tmp_path / "adapter", seed=1, **config)
    pairs = read_adapter(adapter).pairs
    if "rank_pattern" in config:
        assert {p.module.split(".")[2] for p in pairs.values()} == {"1"}  # layers_to_transform
        assert {p.rank for p in pairs.values()} == {4, 8}
    merged = _merged(tiny_llama3_dir, adapter, tmp_path / "out")
    worst, mismatched = compare_every_position(merged, peft_model(tiny_llama3_dir, adapter), long_prompt_ids(tiny_tokenizer, shared_dir))
    assert worst <= 1e-3 and mismatched == 0, (worst, mismatched)


def test_smollm2_standin_adapter_matches_peft(standin_dir, shared_dir, tmp_path):
    import transformers

    from dear_local_convert.standins.lora import random_lora

    adapter = random_lora(standin_dir, tmp_path / "adapter", r=8, alpha=16, seed=2, base_model_name="HuggingFaceTB/SmolLM2-135M-Instruct")
    merged = _merged(standin_dir, adapter, tmp_path / "out")
    tok = transformers.AutoTokenizer.from_pretrained(standin_dir)
    worst, mismatched = compare_every_position(merged, peft_model(standin_dir, adapter), long_prompt_ids(tok, shared_dir))
    assert worst <= 1e-3 and mismatched == 0, (worst, mismatched)


def test_merged_gguf_records_the_adapter(tiny_merged_f32, tiny_lora):
    import gguf

    from dear_local.fileio import sha256_file

    fields = gguf.GGUFReader(tiny_merged_f32).fields
    assert fields["dear_local.lora.repo"].contents() == "example/tiny-lora"
    assert fields["dear_local.lora.revision"].contents() == "r2"
    assert fields["dear_local.lora.sha256"].contents() == sha256_file(tiny_lora / "adapter_model.safetensors")
    assert fields["dear_local.lora.base_model"].contents() == "example/tiny-llama3"
    assert fields["general.name"].contents() == "tiny-merged"
