"""LoRA through the pipeline: refusals at conversion, an interrupted merge, the PEFT reference, check and build.

Refusals run through `convert_checkpoint` and the CLI on real PEFT adapters, and each must
leave nothing behind; tests/test_lora_refusals.py covers every message on hand-written ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dear_local.errors import ConversionError
from optional import needs

pytestmark = needs("torch", "transformers", "peft", "llama_cpp")


def _merge_fails(base: Path, adapter: Path, out: Path, match: str) -> None:
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(base, out, "f32", name="bad", lora=adapter)
    assert not out.exists() or list(out.iterdir()) == [], f"left behind: {list(out.iterdir())}"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"use_dora": True}, r"DoRA \(use_dora\).* is not supported"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, r"adapter on the token embeddings \(model.embed_tokens\) is not supported"),
        ({"target_modules": ["v_proj", "lm_head"]}, r"adapter on the output layer \(lm_head\) is not supported"),
        ({"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}, r"modules_to_save.* is not supported"),
    ],
)
def test_unsupported_peft_adapters_are_refused_by_convert(config, match, tiny_llama3_dir, tmp_path):
    from dear_local_convert.standins.lora import random_lora

    adapter = random_lora(tiny_llama3_dir, tmp_path / "adapter", r=4, alpha=8, **config)
    _merge_fails(tiny_llama3_dir, adapter, tmp_path / "out", match)


def test_an_adapter_for_a_base_of_other_shapes_is_refused_naming_its_base(tiny_llama3_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from dear_local_convert.standins.lora import random_lora

    other = tmp_path / "other-base"
    LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, vocab_size=256)).save_pretrained(other)
    adapter = random_lora(other, tmp_path / "adapter", r=4, alpha=8, base_model_name="example/other-base")
    _merge_fails(tiny_llama3_dir, adapter, tmp_path / "out",
                 r"does not fit .*: model.layers.0.* is \[.*\] there but the adapter expects \[.*\] "
                 r"\(it was trained on example/other-base\); convert that model")


def test_cli_convert_reports_a_refused_adapter_in_one_line(cli, tiny_llama3_dir, tmp_path):
    from dear_local_convert.standins.lora import random_lora

    adapter = random_lora(tiny_llama3_dir, tmp_path / "adapter", r=4, alpha=8, use_dora=True)
    code, _, err = cli("convert", str(tiny_llama3_dir), "--lora", str(adapter), "--out", str(tmp_path / "out"))
    assert code == 2 and err.startswith("error: DoRA") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_an_interrupted_merge_leaves_no_file(tiny_llama3_dir, tiny_lora, tmp_path, monkeypatch):
    from dear_local_convert.lora import merge
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    real, calls = merge.merged_weight, []

    def interrupted(weight, pair):
        calls.append(pair.module)
        if len(calls) == 3:  # part way through the file, as Ctrl-C would
            raise KeyboardInterrupt
        return real(weight, pair)

    monkeypatch.setattr(merge, "merged_weight", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(tiny_llama3_dir, out, "f32", name="m", lora=tiny_lora, verify_tokenizer=False)
    assert len(calls) == 3
    assert not out.exists() or list(out.iterdir()) == []


def test_reference_records_the_adapter_and_check_labels_merged_and_runtime_rows(
    cli, tiny_llama3_dir, tiny_lora, tiny_f32_gguf, tiny_merged_f32, tmp_path
):
    pytest.importorskip("pytrec_eval")
    from dear_local.fileio import sha256_file
    from dear_local_convert.lora.gguf_adapter import convert_adapter

    ref = tmp_path / "ref.jsonl"
    code, _, err = cli(
        "reference", str(tiny_llama3_dir), "--lora", str(tiny_lora), "--out", str(ref), "--queries", "2",
        "--passages", "5", "--device", "cpu", "--dtype", "fp32", "--template", "card", "--decoding", "constrained",
    )
    assert code == 0, err
    header = json.loads(ref.read_text().splitlines()[0])
    lora = header["model"]["lora"]
    assert lora["sha256"] == sha256_file(tiny_lora / "adapter_model.safetensors")
    assert lora["path"] == str(tiny_lora) and lora["base_model"] == "example/tiny-llama3" and "repo" in lora
    assert header["peft"]

    adapter = convert_adapter(tiny_lora, tiny_f32_gguf, tmp_path / "adapter", "f32")
    code, out, err = cli(
        "check", "--reference", str(ref), str(tiny_merged_f32), f"{tiny_f32_gguf}+{adapter}", str(tiny_f32_gguf),
        "--out", str(tmp_path / "report"), "--threads", "2", "--gate", "min_mean_kendall_tau=-1",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = {r["label"]: r for r in report["rows"]}
    assert list(rows) == ["F32 (LoRA merged)", "F32 + tiny-lora-F32", "F32 (no LoRA)"]
    assert rows["F32 (LoRA merged)"]["lora"]["mode"] == "merged"
    assert rows["F32 + tiny-lora-F32"]["lora"]["mode"] == "runtime"
    assert rows["F32 (no LoRA)"]["lora"] is None
    assert rows["F32 (LoRA merged)"]["exact_match_pct"] == 100.0
    assert rows["F32 + tiny-lora-F32"]["exact_match_pct"] == 100.0
    assert "LoRA: the reference ran" in (tmp_path / "report" / "report.md").read_text()


def test_check_refuses_a_merge_of_another_adapter(cli, tiny_llama3_dir, tiny_merged_f32, tmp_path):
    from dear_local_convert.standins.lora import random_lora

    other = random_lora(tiny_llama3_dir, tmp_path / "other", r=4, alpha=8, seed=7)
    ref = tmp_path / "ref.jsonl"
    code, _, err = cli(
        "reference", str(tiny_llama3_dir), "--lora", str(other), "--out", str(ref), "--queries", "1",
        "--passages", "3", "--device", "cpu", "--dtype", "fp32", "--template", "card", "--decoding", "first-token",
    )
    assert code == 0, err
    code, _, err = cli("check", "--reference", str(ref), str(tiny_merged_f32), "--out", str(tmp_path / "report"))
    assert code == 2 and "was made from the LoRA adapter with sha256" in err and "record a reference with this one" in err


def test_build_runs_the_whole_ladder_for_the_lora_manifest(tiny_llama3_dir, tiny_lora):
    import llama_cpp

    from dear_local import store
    from dear_local.fileio import sha256_file
    from dear_local_convert.build import build

    result = build("dear-8b-listwise-lora", checkpoint=tiny_llama3_dir, lora=tiny_lora, threads=2)
    m = store.get_manifest("dear-8b-listwise-lora")
    assert sorted(e["type"] for e in result.rows()) == sorted(m.ladder)
    q4 = m.gguf_path(m.default_quant)
    llm = llama_cpp.Llama(model_path=str(q4), vocab_only=True, verbose=False)
    try:  # the quantizer keeps the merged adapter's provenance
        assert llm.metadata["dear_local.lora.sha256"] == sha256_file(tiny_lora / "adapter_model.safetensors")
        assert llm.metadata["general.name"] == "dear-8b-listwise-lora"
    finally:
        llm.close()
