"""DeAR-P's ``-lora-v1`` shape: a SEQ_CLS LoRA adapter (pairs plus a trained ``score`` head in
``modules_to_save``) merged while converting, against PEFT's own model in transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dear_local.errors import ConversionError, UserInputError
from dear_local.gguf_file import POINTWISE, Keys
from optional import needs

pytestmark = [needs("torch", "transformers", "peft", "gguf", "llama_cpp")]


def _peft_seq_cls(base_dir, adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base_dir, dtype=torch.float32, num_labels=1)
    return PeftModel.from_pretrained(model, str(adapter)).eval()


@pytest.mark.parametrize("base", ["causal", "pointwise"])
def test_a_seq_cls_adapter_merged_at_conversion_scores_as_peft_does(base, tiny_llama3_dir, tiny_pointwise_dir,
                                                                    tmp_path):
    """On a LlamaForCausalLM base (how DeAR-P's adapters are published: the head comes from the
    adapter, lm_head is dropped) and on a classifier base (the adapter's head replaces the base's),
    the merged F32 GGUF is a pointwise ranker whose scores match PEFT's within 1e-3 relative."""
    import torch

    from dear_local.backends.pointwise import PointwiseModel
    from dear_local.gguf_file import read_header
    from dear_local_convert.slices import load_slice
    from dear_local_convert.standins.lora import random_lora
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    base_dir = tiny_llama3_dir if base == "causal" else tiny_pointwise_dir
    adapter = random_lora(base_dir, tmp_path / "seq-cls-lora", r=8, alpha=16, task="SEQ_CLS", seed=3,
                          base_model_name="example/tiny-base")
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    merged = convert_checkpoint(base_dir, tmp_path / "out", "f32", name="tiny-p-lora", lora=adapter)
    header = read_header(merged, arrays={Keys.POINTWISE_HEAD})
    assert header.get(Keys.KIND) == POINTWISE
    assert "output.weight" not in {t.name for t in header.tensors}

    model = _peft_seq_cls(base_dir, adapter)
    head = model.base_model.model.score.modules_to_save["default"].weight.detach().float().numpy().reshape(-1)
    assert np.array_equal(np.asarray(header.get(Keys.POINTWISE_HEAD), dtype=np.float32), head)

    sl = load_slice("noveleval", queries=2, passages=8)
    with PointwiseModel(merged, batch=8, kv_f32=True) as pm:
        for q in sl.queries:
            ids = [pm.pair_ids(q.text, p) for p in q.passages]
            with torch.no_grad():
                want = np.array([model(input_ids=torch.tensor([i])).logits[0, 0].item() for i in ids])
            got = pm.score_ids(ids)
            assert np.max(np.abs(got - want)) <= 1e-3 * np.max(np.abs(want))
            assert list(np.argsort(-got, kind="stable")) == list(np.argsort(-want, kind="stable"))


def _edit_adapter(src, dst, *, config=None, drop_head=False):
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if config:
        path = dst / "adapter_config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | config))
    if drop_head:
        weights = dst / "adapter_model.safetensors"
        tensors = {k: v for k, v in load_file(weights).items() if not k.endswith("score.weight")}
        save_file(tensors, weights, metadata={"format": "pt"})
    return dst


def test_seq_cls_adapters_that_cannot_make_a_pointwise_ranker_are_refused_by_name(tiny_llama3_dir, tmp_path):
    from dear_local_convert.lora.adapter import read_adapter
    from dear_local_convert.lora.gguf_adapter import convert_adapter
    from dear_local_convert.standins.lora import random_lora

    good = random_lora(tiny_llama3_dir, tmp_path / "good", r=4, alpha=8, task="SEQ_CLS", target_modules=["q_proj"])
    assert read_adapter(good).pointwise
    cases = [
        ({"drop_head": True}, r"SEQ_CLS adapter but adapter_model\.safetensors holds no score\.weight"),
        ({"config": {"task_type": "CAUSAL_LM"}}, r"saves the classification head .* task_type is 'CAUSAL_LM'"),
        ({"config": {"modules_to_save": ["score", "lm_head"]}}, r"not supported beyond a classification head"),
    ]
    for i, (edit, message) in enumerate(cases):
        with pytest.raises(ConversionError, match=message):
            read_adapter(_edit_adapter(good, tmp_path / f"bad{i}", **edit))
    # a runtime llama.cpp LoRA file cannot carry the head: merge instead, said in one line
    with pytest.raises(ConversionError, match=r"SEQ_CLS .* merge it while converting instead"):
        convert_adapter(good, _any_gguf(tmp_path), tmp_path / "out")


def _any_gguf(tmp_path):
    import gguf

    path = tmp_path / "base.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def test_the_listwise_reference_refuses_a_pointwise_adapter(tiny_llama3_dir, tmp_path):
    from dear_local.contract import Profile
    from dear_local_convert.reference.record import write_reference
    from dear_local_convert.slices import load_slice
    from dear_local_convert.standins.lora import random_lora

    adapter = random_lora(tiny_llama3_dir, tmp_path / "a", r=4, alpha=8, task="SEQ_CLS", target_modules=["q_proj"])
    with pytest.raises(UserInputError, match=r"SEQ_CLS \(pointwise ranker\) adapter"):
        write_reference(tiny_llama3_dir, load_slice("noveleval", queries=1, passages=3), Profile(),
                        tmp_path / "ref.jsonl", device="cpu", lora=adapter)


def test_a_seq_cls_adapters_reference_checks_its_merged_gguf(tiny_llama3_dir, tmp_path):
    """The reference runs the adapter through PEFT on the causal base; the merged GGUF is checked against it,
    marked as LoRA merged, and a causal base without the adapter is refused (its head would be random)."""
    from dear_local_convert.agreement.pointwise import check_pointwise
    from dear_local_convert.reference import write_pointwise_reference
    from dear_local_convert.slices import load_slice
    from dear_local_convert.standins.lora import random_lora
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    sl = load_slice("noveleval", queries=2, passages=6)
    adapter = random_lora(tiny_llama3_dir, tmp_path / "a", r=8, alpha=16, task="SEQ_CLS", seed=5)
    ref = write_pointwise_reference(tiny_llama3_dir, sl, tmp_path / "ref.jsonl", device="cpu", dtype="fp32",
                                    lora=adapter, lora_repo="example/p-lora")
    merged = convert_checkpoint(tiny_llama3_dir, tmp_path / "out", "f32", name="p-lora", lora=adapter)
    report = check_pointwise(ref, [merged])
    (row,) = report["rows"]
    assert row.label == "F32 (LoRA merged)" and row.mean_tau >= 0.99 and row.top10_overlap == 1.0
    assert report["reference"]["model"]["lora"]["repo"] == "example/p-lora"
    with pytest.raises(UserInputError, match="not a sequence-classification checkpoint, and no SEQ_CLS adapter"):
        write_pointwise_reference(tiny_llama3_dir, sl, tmp_path / "bad.jsonl", device="cpu")
