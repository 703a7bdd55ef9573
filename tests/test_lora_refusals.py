"""LoRA adapters, fast tier: every refusal of an adapter, the hub's gated-repo message, the CLI's options.

The adapters here are written file by file in PEFT's layout (``adapter_config.json`` plus
``adapter_model.safetensors`` with ``base_model.model.<module>.lora_A.weight`` names), so
the real reader runs on them without a model; tests/test_lora_merge.py and friends make
real ones with PEFT.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dear_local.errors import ConversionError
from optional import needs

pytestmark = needs("torch", "safetensors", "peft")

HIDDEN, FF, R = 16, 32, 4


def write_adapter(dest: Path, *, config: dict | None = None, tensors: dict | None = None, layers=(0,), modules=("q_proj", "v_proj")) -> Path:
    """A PEFT-layout adapter in ``dest``: rank-R pairs on ``modules`` of ``layers``, plus ``tensors``."""
    import torch
    from safetensors.torch import save_file

    dest.mkdir(parents=True)
    cfg = {
        "peft_type": "LORA", "r": R, "lora_alpha": 8, "target_modules": list(modules), "bias": "none",
        "base_model_name_or_path": "example/base", "task_type": "CAUSAL_LM", "use_rslora": False,
        **(config or {}),
    }
    (dest / "adapter_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    data = {}
    for layer in layers:
        for mod in modules:
            part = "mlp" if mod.endswith(("gate_proj", "up_proj", "down_proj")) else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{part}.{mod}"
            data[f"{prefix}.lora_A.weight"] = torch.randn(R, HIDDEN)
            data[f"{prefix}.lora_B.weight"] = torch.randn(HIDDEN, R)
    data.update(tensors or {})
    save_file(data, str(dest / "adapter_model.safetensors"))
    return dest


def ones(shapes: dict[str, tuple[int, ...]]) -> dict:
    """``torch.ones`` of each shape, by tensor name (torch is imported when a test runs, not when it is collected)."""
    import torch

    return {name: torch.ones(shape) for name, shape in shapes.items()}


def refused(path: Path, match: str) -> str:
    from dear_local_convert.lora.adapter import read_adapter

    with pytest.raises(ConversionError, match=match) as info:
        read_adapter(path)
    return str(info.value)


def test_a_plain_adapter_reads_with_peft_scales(tmp_path):
    from dear_local_convert.lora.adapter import read_adapter

    a = read_adapter(write_adapter(tmp_path / "a"))
    assert sorted(a.pairs) == ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"]
    assert {p.scale for p in a.pairs.values()} == {8 / R}
    assert a.base_model == "example/base" and len(a.sha256) == 64


def test_rslora_and_alpha_pattern_set_each_modules_scale(tmp_path):
    from dear_local_convert.lora.adapter import read_adapter

    a = read_adapter(write_adapter(tmp_path / "a", config={"use_rslora": True, "alpha_pattern": {"v_proj": 2}}))
    assert a.pairs["model.layers.0.self_attn.q_proj.weight"].scale == pytest.approx(8 / R**0.5)
    assert a.pairs["model.layers.0.self_attn.v_proj.weight"].scale == pytest.approx(2 / R**0.5)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"use_dora": True}, r"DoRA \(use_dora\).* is not supported.*merge_and_unload"),
        ({"modules_to_save": ["lm_head"]}, r"modules_to_save.* is not supported"),
        ({"bias": "lora_only"}, r"trained biases \(bias: 'lora_only'.*not supported"),
        ({"lora_bias": True}, r"lora_bias.* is not supported"),
        ({"fan_in_fan_out": True}, r"fan_in_fan_out.* is not supported"),
        ({"trainable_token_indices": [1, 2]}, r"trainable_token_indices.* is not supported"),
        ({"peft_type": "LOHA"}, r"peft_type 'LOHA'; dear-local supports plain LoRA"),
        ({"target_modules": ["q_proj", "v_proj", "lm_head"]}, r"adapter on the output layer \(lm_head\) is not supported"),
        ({"target_modules": ["q_proj", "v_proj", "embed_tokens"]}, r"adapter on the token embeddings.* is not supported"),
        ({"lora_alpha": 0}, r"lora_alpha 0.0; both must be positive"),
    ],
)
def test_unsupported_settings_are_refused_by_name(tmp_path, config, match):
    refused(write_adapter(tmp_path / "a", config=config), match)


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": (HIDDEN,)},
         r"DoRA is not supported .*lora_magnitude_vector"),
        ({"base_model.model.model.embed_tokens.lora_embedding_A": (R, 100)},
         r"adapter on the token embeddings.*lora_embedding_A"),
        ({"base_model.model.lm_head.lora_A.weight": (R, HIDDEN)}, r"output layer \(lm_head\) is not supported"),
        ({"base_model.model.lm_head.modules_to_save.default.weight": (100, HIDDEN)},
         r"modules_to_save.*a module saved whole .*not supported"),
        ({"base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias": (HIDDEN,)}, r"a trained bias"),
        ({"base_model.model.model.norm.lora_A.weight": (R, HIDDEN)}, r"adapts model.norm, which is not an attention or MLP projection"),
    ],
)
def test_unsupported_tensors_are_refused_by_name(tmp_path, tensors, match):
    refused(write_adapter(tmp_path / "a", tensors=ones(tensors)), match)


def test_a_pair_the_config_does_not_target_is_refused(tmp_path):
    extra = ones({
        "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": (R, HIDDEN),
        "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": (FF, R),
    })
    refused(write_adapter(tmp_path / "a", tensors=extra), r"adapts model.layers.0.mlp.up_proj, which target_modules .* does not name")


def test_half_a_pair_or_mismatched_ranks_are_refused(tmp_path):
    half = ones({"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight": (R, HIDDEN)})
    refused(write_adapter(tmp_path / "a", tensors=half), r"has lora_A but not its other half for model.layers.1.self_attn.q_proj")
    ranks = ones({"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": (HIDDEN, R + 1)})
    refused(write_adapter(tmp_path / "b", tensors=ranks), r"lora_A has rank 4 but lora_B has 5")
    refused(write_adapter(tmp_path / "c", config={"rank_pattern": {"q_proj": 8}}), r"gives rank 8 but lora_A has 4 rows")


def test_pickled_or_missing_weights_and_missing_config_are_refused(tmp_path):
    a = write_adapter(tmp_path / "a")
    (a / "adapter_model.safetensors").rename(a / "adapter_model.bin")
    refused(a, r"only pickled adapter weights \(adapter_model.bin\)")
    b = write_adapter(tmp_path / "b")
    (b / "adapter_config.json").unlink()
    refused(b, r"has no adapter_config.json; pass the directory PEFT's save_pretrained wrote")
    refused(tmp_path / "nowhere", r"is not a directory")


def test_an_adapter_for_another_base_names_the_base_it_was_trained_on(tmp_path):
    from dear_local_convert.lora.adapter import read_adapter

    a = read_adapter(write_adapter(tmp_path / "a"))
    shapes = {f"model.layers.0.self_attn.{m}.weight": (HIDDEN * 2, HIDDEN * 2) for m in ("q_proj", "v_proj")}
    with pytest.raises(ConversionError, match=r"does not fit base-dir: model.layers.0.self_attn.q_proj is \[32, 32\] "
                       r"there but the adapter expects \[16, 16\] \(it was trained on example/base\)"):
        a.check_base(shapes, "base-dir")
    with pytest.raises(ConversionError, match=r"adapts model.layers.0.self_attn.q_proj, which base-dir does not have"):
        a.check_base({}, "base-dir")


def test_a_target_without_its_pair_is_an_incomplete_adapter(tmp_path):
    from dear_local_convert.lora.adapter import read_adapter

    a = read_adapter(write_adapter(tmp_path / "a", layers=(0,)))
    shapes = {f"model.layers.{i}.self_attn.{m}.weight": (HIDDEN, HIDDEN) for i in (0, 1) for m in ("q_proj", "v_proj")}
    with pytest.raises(ConversionError, match=r"targets model.layers.1.self_attn.q_proj but adapter_model.safetensors holds no"):
        a.check_base(shapes, "base")
    a = read_adapter(write_adapter(tmp_path / "b", layers=(0,), config={"layers_to_transform": [0]}))
    a.check_base(shapes, "base")  # layer 1 is not targeted: nothing missing


def test_a_gated_repo_says_how_to_pass_a_token():
    import httpx2
    from huggingface_hub.errors import GatedRepoError

    from dear_local.store import download_error

    response = httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co/api/models/meta-llama/x"))
    err = download_error("meta-llama/Llama-3.1-8B-Instruct", "main", GatedRepoError("Access restricted", response=response))
    assert "gated or private" in str(err)
    assert "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct" in str(err)
    assert "HF_TOKEN" in str(err) and "huggingface-cli login" in str(err)


def test_the_lora_manifest_names_the_adapter_and_its_gated_base():
    from dear_local.store import get_manifest

    m = get_manifest("dear-8b-listwise-lora")
    assert m.hf_repo == "meta-llama/Llama-3.1-8B-Instruct"
    assert m.lora["repo"] == "abdoelsayed/dear-8b-reranker-listwise-lora-v1"
    assert m.profile.template == "rankgpt-chat"
    assert m.ladder[0] == "BF16" and m.default_quant in m.ladder and m.gates


def test_pull_of_the_lora_manifest_offline_names_the_download(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _out, err = cli("pull", "dear-8b-listwise-lora")
    assert code == 2 and err.startswith("error: ") and "meta-llama/Llama-3.1-8B-Instruct" in err and "offline" in err


def test_help_describes_the_lora_options(cli):
    code, out, _ = cli("convert", "--help")
    assert code == 0 and "--lora" in out and "--lora-revision" in out
    code, out, _ = cli("convert-lora", "--help")
    assert code == 0 and "--base" in out and "GGUF LoRA" in out
    for cmd in ("rerank", "serve", "reference"):
        code, out, _ = cli(cmd, "--help")
        assert code == 0 and "--lora" in out, cmd


def test_rerank_with_a_missing_adapter_fails_before_loading(cli, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(12))
    code, _, err = cli("rerank", "-m", str(model), "-q", "x", "--lora", str(tmp_path / "nope.gguf"), stdin="a\nb\n")
    assert code == 2 and "LoRA adapter" in err and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_rerank_with_a_peft_directory_says_to_convert_it(cli, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(12))
    adapter = write_adapter(tmp_path / "peft-adapter")
    code, _, err = cli("rerank", "-m", str(model), "-q", "x", "--lora", str(adapter), stdin="a\nb\n")
    assert code == 2 and "is a PEFT adapter directory; convert it to a GGUF adapter first" in err
    assert "dear-local convert-lora" in err


def test_models_lists_the_lora_manifest_with_its_adapter(cli):
    code, out, _ = cli("models")
    assert code == 0
    assert "dear-8b-listwise-lora" in out
    assert "LoRA adapter abdoelsayed/dear-8b-reranker-listwise-lora-v1 merged into meta-llama/Llama-3.1-8B-Instruct" in out
