"""Fixtures shared by the converter tests (imported by tests/test_convert_*.py).

The expensive inputs (the tiny Llama-3.1 checkpoint, the SmolLM2 bf16
checkpoint) are built once into the persistent test cache. The converter's
outputs are rebuilt once per session, so every run tests the current code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Bump when a builder changes, so stale cached inputs are not reused.
TINY_KEY = "tiny-llama3-v1"
STANDIN_KEY = "smollm2-bf16-v1"
TINY_POINTWISE_KEY = "tiny-llama3-pointwise-v1"
STANDIN_POINTWISE_KEY = "smollm2-pointwise-v1"


@pytest.fixture(scope="session")
def tiny_llama3_dir(test_cache, llama3_vocab_gguf) -> Path:
    pytest.importorskip("transformers")
    from dear_local_convert.standins.tiny_llama3 import build_tiny_llama3

    return build_tiny_llama3(test_cache / TINY_KEY, llama3_vocab_gguf)


@pytest.fixture(scope="session")
def tiny_f32_gguf(tiny_llama3_dir, tmp_path_factory) -> Path:
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    out = tmp_path_factory.mktemp("tiny-gguf")
    return convert_checkpoint(
        tiny_llama3_dir, out, "f32", name="tiny-llama3", source_repo="example/tiny-llama3", revision="r1"
    )


@pytest.fixture(scope="session")
def tiny_pointwise_dir(test_cache, llama3_vocab_gguf) -> Path:
    """The tiny Llama-3.1 as a pointwise ranker (LlamaForSequenceClassification, one label), shaped like DeAR-P."""
    pytest.importorskip("transformers")
    from dear_local_convert.standins.tiny_llama3 import build_tiny_llama3_pointwise

    return build_tiny_llama3_pointwise(test_cache / TINY_POINTWISE_KEY, llama3_vocab_gguf)


@pytest.fixture(scope="session")
def tiny_pointwise_gguf(tiny_pointwise_dir, tmp_path_factory) -> Path:
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    out = tmp_path_factory.mktemp("tiny-pointwise-gguf")
    return convert_checkpoint(tiny_pointwise_dir, out, "f32", name="tiny-pointwise", source_repo="example/tiny-p")


@pytest.fixture(scope="session")
def standin_pointwise_dir(test_cache, standin_dir) -> Path:
    """SmolLM2 as a pointwise ranker: its real weights, one label, a random score head, DeAR-P's pair template."""
    from dear_local_convert.standins.smollm2_pointwise import build_smollm2_pointwise

    return build_smollm2_pointwise(standin_dir, test_cache / STANDIN_POINTWISE_KEY)


@pytest.fixture(scope="session")
def standin_dir(test_cache, standin_gguf) -> Path:
    pytest.importorskip("transformers")
    from dear_local_convert.standins.smollm2 import standin_checkpoint

    return standin_checkpoint(test_cache / STANDIN_KEY, gguf_path=standin_gguf)


@pytest.fixture(scope="session")
def standin_bf16_gguf(standin_dir, tmp_path_factory) -> Path:
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    out = tmp_path_factory.mktemp("standin-gguf")
    return convert_checkpoint(
        standin_dir, out, "bf16", name="smollm2-135m-instruct", source_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        revision="standin",
    )


def noveleval_windows(shared_dir: Path) -> list[tuple[str, list[str]]]:
    """All 21 NovelEval queries with their 20 passages, in candidate order."""
    from dear_local_convert.slices import load_slice

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEAR_LOCAL_DATA", str(shared_dir / "data"))
        return [(q.text, list(q.passages)) for q in load_slice("noveleval").queries]


def vocab_test_vectors(shared_dir: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors: (text, expected ids without BOS)."""
    base = shared_dir / "fixtures" / "ggml-vocab-llama-bpe.gguf"
    texts = Path(f"{base}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outs = Path(f"{base}.out").read_text(encoding="utf-8").split("\n")
    assert len(texts) == len(outs), "the .inp and .out fixtures do not pair up"
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]
