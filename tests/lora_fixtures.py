"""Fixtures and helpers shared by the LoRA tests (imported by tests/test_lora_*.py).

Adapters are made by PEFT on the stand-in checkpoints (random A and B), once per
session; conversions are rebuilt per session, so every run tests the current code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convert_fixtures import noveleval_windows

GGML_TYPE_F32 = 0


@pytest.fixture(scope="session")
def tiny_lora(tiny_llama3_dir, tmp_path_factory) -> Path:
    """Rank 16, alpha 32 on all seven projections (as LLaMA-Factory's `all` does), stored in bf16."""
    from dear_local_convert.standins.lora import random_lora

    return random_lora(tiny_llama3_dir, tmp_path_factory.mktemp("lora") / "tiny-lora", base_model_name="example/tiny-llama3")


@pytest.fixture(scope="session")
def tiny_merged_f32(tiny_llama3_dir, tiny_lora, tmp_path_factory) -> Path:
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    return convert_checkpoint(
        tiny_llama3_dir, tmp_path_factory.mktemp("merged"), "f32", name="tiny-merged", lora=tiny_lora,
        lora_repo="example/tiny-lora", lora_revision="r2",
    )


def long_prompt_ids(tokenizer, shared_dir, n: int = 2100) -> list[int]:
    """At least ``n`` tokens: the `card` prompts of NovelEval queries 0 and 1 (20 passages each), cut to ``n``."""
    from dear_local.contract import get_template

    card = get_template("card")
    text = "".join(card.render_raw(q, p) for q, p in noveleval_windows(shared_dir)[:2])
    ids = tokenizer(text)["input_ids"][:n]
    assert len(ids) == n
    return ids


def compare_every_position(gguf_path: Path, hf_model, ids: list[int], chunk: int = 256, **load) -> tuple[float, int]:
    """Run ``ids`` through the GGUF (F32 KV cache) and the transformers model; compare logits chunk by chunk.

    Returns ``(worst relative difference, positions whose argmax differs)``; the relative
    difference is max |llama.cpp - transformers| over max |transformers| within a chunk.
    Chunks keep memory low: every position's logits over a 128,256-token vocabulary
    would be a gigabyte per side.
    """
    import llama_cpp
    import torch

    from dear_local.backends.loader import open_llama

    with torch.no_grad():
        hidden = hf_model.model(torch.tensor([ids])).last_hidden_state[0]
    llm, _ = open_llama(
        gguf_path, n_ctx=len(ids) + 16, n_batch=chunk, n_ubatch=chunk, logits_all=False,
        type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, n_threads=2, verbose=False, **load,
    )
    worst, mismatched = 0.0, 0
    try:
        n_vocab = llm.n_vocab()
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            llm._batch.set_batch(batch=part, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            got = np.stack([
                np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, i), shape=(n_vocab,)).copy()
                for i in range(len(part))
            ])
            with torch.no_grad():
                want = hf_model.lm_head(hidden[start : start + chunk]).numpy()
            worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
            mismatched += int((got.argmax(-1) != want.argmax(-1)).sum())
    finally:
        llm.close()
    return worst, mismatched


def peft_model(base_dir: Path, adapter: Path):
    """PEFT's model in transformers fp32: the base with the adapter's layers injected (not merged)."""
    import torch
    import transformers
    from peft import PeftModel

    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(adapter)).eval().get_base_model()
