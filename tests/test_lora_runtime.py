"""GGUF LoRA adapters applied at run time: `convert-lora`, then `Reranker(..., lora=)`, `rerank --lora`, `serve --lora`.

Acceptance: the base GGUF plus the runtime adapter gives the merged GGUF's argmax at every
position of a prompt, and the same rankings on NovelEval windows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dear_local.errors import ConversionError, InvalidModelFileError
from convert_fixtures import noveleval_windows
from lora_fixtures import GGML_TYPE_F32
from optional import needs

pytestmark = needs("torch", "peft", "llama_cpp", "gguf")


@pytest.fixture(scope="module")
def tiny_adapter_gguf(tiny_lora, tiny_f32_gguf, tmp_path_factory):
    from dear_local_convert.lora.gguf_adapter import convert_adapter

    return convert_adapter(tiny_lora, tiny_f32_gguf, tmp_path_factory.mktemp("adapter"), "f32", repo="example/tiny-lora")


def _logits(path, ids, **load) -> np.ndarray:
    from dear_local.backends.loader import open_llama

    llm, _ = open_llama(path, n_ctx=len(ids) + 8, logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32,
                        n_threads=2, verbose=False, **load)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def test_adapter_file_is_llama_cpps_lora_format(tiny_adapter_gguf, tiny_lora):
    import gguf

    from dear_local.fileio import sha256_file

    r = gguf.GGUFReader(tiny_adapter_gguf)
    assert r.fields["general.type"].contents() == "adapter"
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["adapter.type"].contents() == "lora"
    assert r.fields["adapter.lora.alpha"].contents() == 32.0
    assert r.fields["dear_local.lora.sha256"].contents() == sha256_file(tiny_lora / "adapter_model.safetensors")
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in r.tensors}
    assert len(shapes) == 2 * 7 * 2  # A and B, seven projections, two blocks
    assert shapes["blk.0.attn_q.weight.lora_a"] == (16, 128)  # (r, in)
    assert shapes["blk.0.attn_k.weight.lora_b"] == (64, 16)  # (out, r): 2 KV heads x 32
    assert shapes["blk.1.ffn_down.weight.lora_a"] == (16, 384)


def test_base_plus_runtime_adapter_gives_the_merged_argmax(tiny_f32_gguf, tiny_adapter_gguf, tiny_merged_f32):
    ids = [128000, *range(1000, 1600)]
    merged = _logits(tiny_merged_f32, ids)
    runtime = _logits(tiny_f32_gguf, ids, lora=tiny_adapter_gguf)
    assert np.array_equal(runtime.argmax(-1), merged.argmax(-1))
    assert np.abs(runtime - merged).max() <= 1e-3 * np.abs(merged).max()
    base = _logits(tiny_f32_gguf, ids, lora=tiny_adapter_gguf, lora_scale=0.0)
    assert np.array_equal(base, _logits(tiny_f32_gguf, ids))  # scale 0: the base alone
    assert (base.argmax(-1) != merged.argmax(-1)).sum() > 100


def _rankings(reranker, windows) -> list[list[int]]:
    return [[r.index for r in reranker.rerank(q, p).results] for q, p in windows]


def test_rankings_on_noveleval_windows_are_the_merged_ones(tiny_f32_gguf, tiny_adapter_gguf, tiny_merged_f32, shared_dir):
    from dear_local import Reranker

    windows = noveleval_windows(shared_dir)
    assert len(windows) == 21
    for decoding, n in (("first-token", 21), ("constrained", 2)):
        with Reranker(str(tiny_merged_f32), decoding=decoding, n_threads=2) as merged, \
                Reranker(str(tiny_f32_gguf), decoding=decoding, n_threads=2, lora=str(tiny_adapter_gguf)) as runtime:
            want = _rankings(merged, windows[:n])
            assert _rankings(runtime, windows[:n]) == want, decoding
            assert any(w != list(range(20)) for w in want)  # the model reorders, so the comparison means something


def test_rerank_cli_applies_the_adapter(cli, tiny_f32_gguf, tiny_adapter_gguf, tiny_merged_f32, shared_dir):
    q, passages = noveleval_windows(shared_dir)[0]
    docs = "\n".join(p.replace("\n", " ") for p in passages[:8]) + "\n"
    args = ("-q", q, "--format", "json", "--decoding", "first-token", "--threads", "2")
    code, merged, err = cli("rerank", "-m", str(tiny_merged_f32), *args, stdin=docs)
    assert code == 0, err
    code, runtime, err = cli("rerank", "-m", str(tiny_f32_gguf), "--lora", str(tiny_adapter_gguf), *args, stdin=docs)
    assert code == 0, err
    order = lambda out: [r["index"] for r in json.loads(out)["results"]]  # noqa: E731
    assert order(runtime) == order(merged)


def test_serve_applies_the_adapter(tiny_f32_gguf, tiny_adapter_gguf, tiny_merged_f32, shared_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dear_local import Reranker
    from dear_local.run_options import RunOptions
    from dear_local.server import ServerSettings, create_app

    q, passages = noveleval_windows(shared_dir)[1]
    run = RunOptions(decoding="first-token", n_threads=2, lora=str(tiny_adapter_gguf))
    with TestClient(create_app(ServerSettings(model=str(tiny_f32_gguf), run=run))) as client:
        resp = client.post("/v1/rerank", json={"query": q, "documents": passages[:8]})
    assert resp.status_code == 200, resp.text
    with Reranker(str(tiny_merged_f32), decoding="first-token", n_threads=2) as merged:
        want = [r.index for r in merged.rerank(q, passages[:8]).results]
    assert [r["index"] for r in resp.json()["results"]] == want


def test_an_adapter_for_another_base_is_refused_with_llama_cpps_reason(standin_gguf, tiny_adapter_gguf):
    from dear_local import Reranker

    with pytest.raises(InvalidModelFileError, match=r"could not apply the LoRA adapter .*incorrect shape.*dear-local convert-lora"):
        Reranker(str(standin_gguf), lora=str(tiny_adapter_gguf))


def test_a_model_given_as_adapter_is_refused_with_llama_cpps_reason(tiny_f32_gguf, tiny_merged_f32):
    from dear_local import Reranker

    with pytest.raises(InvalidModelFileError, match=r"expect general.type to be 'adapter', but got: model"):
        Reranker(str(tiny_f32_gguf), lora=str(tiny_merged_f32))


def test_convert_lora_refuses_a_base_of_other_shapes_and_writes_nothing(tiny_lora, standin_gguf, tmp_path):
    from dear_local_convert.lora.gguf_adapter import convert_adapter

    with pytest.raises(ConversionError, match=r"does not fit .*: model.layers.0.* \(it was trained on example/tiny-llama3\)"):
        convert_adapter(tiny_lora, standin_gguf, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_convert_lora_refuses_an_adapter_as_base_and_keeps_existing_output(tiny_lora, tiny_adapter_gguf, tiny_f32_gguf, tmp_path):
    from dear_local_convert.lora.gguf_adapter import convert_adapter

    with pytest.raises(ConversionError, match="is itself an adapter; --base takes the base model's GGUF"):
        convert_adapter(tiny_lora, tiny_adapter_gguf, tmp_path)
    first = convert_adapter(tiny_lora, tiny_f32_gguf, tmp_path)  # bf16, the adapter's own dtype
    assert first.name == "tiny-lora-BF16.gguf"
    stamp = first.stat().st_mtime_ns
    assert convert_adapter(tiny_lora, tiny_f32_gguf, tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert convert_adapter(tiny_lora, tiny_f32_gguf, tmp_path, force=True).stat().st_mtime_ns != stamp


def test_rsLoRA_and_alpha_pattern_carry_over_to_the_runtime_adapter(tiny_llama3_dir, tiny_f32_gguf, tmp_path):
    """llama.cpp scales by alpha / r; PEFT's rsLoRA and per-module alphas are folded into lora_b."""
    from dear_local_convert.lora.gguf_adapter import convert_adapter
    from dear_local_convert.standins.lora import random_lora
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    adapter = random_lora(tiny_llama3_dir, tmp_path / "a", r=8, alpha=16, use_rslora=True, seed=3,
                          target_modules=["q_proj", "down_proj"], alpha_pattern={"down_proj": 4})
    merged = convert_checkpoint(tiny_llama3_dir, tmp_path / "m", "f32", name="m", lora=adapter, verify_tokenizer=False)
    runtime = convert_adapter(adapter, tiny_f32_gguf, tmp_path / "g", "f32")
    ids = [128000, *range(2000, 2300)]
    want, got = _logits(merged, ids), _logits(tiny_f32_gguf, ids, lora=runtime)
    assert np.array_equal(got.argmax(-1), want.argmax(-1))
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
