"""The ranking-calibrated importance matrix, on the tiny Llama-3.1.

Acceptance: the hooks' means match a hand computation; the file round-trips
(and llama.cpp's own GGUF reader accepts it); quantizing with it changes the
weight tensors; calibration on a slice that overlaps the evaluation slice is
refused; IQ types that need a matrix are refused without one.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convert_fixtures import tiny_f32_gguf, tiny_llama3_dir  # noqa: F401  (fixtures)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from convert.imatrix_collect import ImatrixCollector, check_disjoint, gguf_weight_names  # noqa: E402
from convert.imatrix_file import Imatrix, QuantizeMatrix, read_imatrix, write_imatrix  # noqa: E402
from convert.quantize import quantize  # noqa: E402
from convert.slices import load_slice  # noqa: E402
from dear_local.errors import UserInputError  # noqa: E402


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dear_local", *args], capture_output=True, env=dict(os.environ), timeout=600
    )


@pytest.fixture(scope="module")
def tiny_model(tiny_llama3_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama3_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def calibrated(tiny_llama3_dir, tmp_path_factory) -> Path:
    """A matrix made by the real command: 1 DL19 query x 3 passages, rankgpt-chat, first-token."""
    out = tmp_path_factory.mktemp("imatrix") / "tiny-imatrix.gguf"
    proc = run_cli(
        "imatrix", str(tiny_llama3_dir), "--out", str(out), "--slice", "dl19-top20", "--queries", "1",
        "--passages", "3", "--template", "rankgpt-chat", "--decoding", "first-token", "--dtype", "fp32",
        "--device", "cpu",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return out


def tensor_bytes(path: Path) -> dict[str, tuple[str, bytes]]:
    return {t.name: (t.tensor_type.name, t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


# -- collection ---------------------------------------------------------------------------------


def test_every_linear_maps_to_its_gguf_weight(tiny_model, tiny_f32_gguf):
    names = gguf_weight_names(tiny_model)
    assert names["model.layers.0.self_attn.q_proj"] == "blk.0.attn_q.weight"
    assert names["model.layers.1.mlp.down_proj"] == "blk.1.ffn_down.weight"
    assert names["lm_head"] == "output.weight"  # untied, like DeAR-8B
    gguf_2d = {t.name for t in gguf.GGUFReader(tiny_f32_gguf).tensors if len(t.shape) == 2}
    assert set(names.values()) == gguf_2d - {"token_embd.weight"}


def test_hook_means_match_a_hand_computation(tiny_model):
    names = gguf_weight_names(tiny_model)
    calls = [torch.tensor([[128000, 791, 6864, 315, 9822, 374]]), torch.tensor([[128000, 40, 1093, 9120, 9]])]
    with ImatrixCollector(tiny_model, names) as c, torch.inference_mode():
        for ids in calls:
            tiny_model(input_ids=ids)
    means = Imatrix(c.sums(), c.counts()).means()
    assert c.counts()["blk.0.attn_q.weight"] == 11 and c.counts()["output.weight"] == 11

    # By hand: layer 0's attention reads the normed embeddings; the head reads the final hidden state.
    with torch.inference_mode():
        attn_in = torch.cat([tiny_model.model.layers[0].input_layernorm(tiny_model.model.embed_tokens(i))[0] for i in calls])
        head_in = torch.cat([tiny_model.model(input_ids=i).last_hidden_state[0] for i in calls])
    for name, x in (("blk.0.attn_q.weight", attn_in), ("blk.0.attn_v.weight", attn_in), ("output.weight", head_in)):
        by_hand = (x.double() ** 2).mean(dim=0).numpy()
        np.testing.assert_allclose(means[name], by_hand, rtol=1e-5, err_msg=name)
    # Hooks are gone after the block: another pass changes nothing.
    before = c.counts()
    with torch.inference_mode():
        tiny_model(input_ids=calls[0])
    assert c.counts() == before


# -- the file -----------------------------------------------------------------------------------


def _ggml_reads(path: Path) -> dict:
    """Open the file with llama.cpp's own GGUF reader (libggml-base) and report what it sees."""
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))

    class InitParams(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]

    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, InitParams]
    for fn, res, args in (
        ("gguf_get_n_tensors", ctypes.c_int64, [ctypes.c_void_p]),
        ("gguf_find_key", ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p]),
        ("gguf_get_val_u32", ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_val_str", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_arr_n", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_tensor_name", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_tensor_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_free", None, [ctypes.c_void_p]),
    ):
        getattr(lib, fn).restype = res
        getattr(lib, fn).argtypes = args
    ctx = lib.gguf_init_from_file(str(path).encode(), InitParams(True, None))
    assert ctx, "llama.cpp's gguf_init_from_file refused the file"
    try:
        key = lambda k: lib.gguf_find_key(ctx, k.encode())  # noqa: E731
        n = lib.gguf_get_n_tensors(ctx)
        return {
            "type": lib.gguf_get_val_str(ctx, key("general.type")).decode(),
            "has_arch": key("general.architecture") != -1,
            "datasets": lib.gguf_get_arr_n(ctx, key("imatrix.datasets")),
            "chunk_count": lib.gguf_get_val_u32(ctx, key("imatrix.chunk_count")),
            "chunk_size": lib.gguf_get_val_u32(ctx, key("imatrix.chunk_size")),
            "tensors": {lib.gguf_get_tensor_name(ctx, i).decode(): lib.gguf_get_tensor_type(ctx, i) for i in range(n)},
        }
    finally:
        lib.gguf_free(ctx)


def test_the_file_round_trips_and_llama_cpp_reads_it(calibrated, tmp_path):
    m = read_imatrix(calibrated)
    assert m.calibration["slice"] == "dl19-top20" and m.calibration["queries"] == 1
    assert m.calibration["profile"]["decoding"] == "first-token"
    assert m.chunk_count == m.calibration["windows"] == 1 and m.chunk_size > 100

    copy = write_imatrix(m, tmp_path / "copy.gguf")
    again = read_imatrix(copy)
    assert again.counts == m.counts and again.datasets == m.datasets
    assert (again.chunk_count, again.chunk_size, again.calibration) == (m.chunk_count, m.chunk_size, m.calibration)
    for name in m.sums:
        np.testing.assert_array_equal(again.sums[name], m.sums[name])
    with pytest.raises(UserInputError, match="--force"):
        write_imatrix(m, copy)

    seen = _ggml_reads(calibrated)
    assert seen["type"] == "imatrix" and not seen["has_arch"]
    assert seen["datasets"] == 1 and seen["chunk_count"] == m.chunk_count and seen["chunk_size"] == m.chunk_size
    assert set(seen["tensors"]) == {f"{n}.in_sum2" for n in m.sums} | {f"{n}.counts" for n in m.sums}
    assert set(seen["tensors"].values()) == {0}  # all F32


# -- quantizing with it -------------------------------------------------------------------------


def test_quantizing_with_the_matrix_changes_the_weights(calibrated, tiny_f32_gguf, tmp_path):
    quantize(tiny_f32_gguf, ["Q4_0"], tmp_path / "without", threads=2)
    manifest = quantize(tiny_f32_gguf, ["Q4_0"], tmp_path / "with", threads=2, imatrix=calibrated)
    without = tensor_bytes(tmp_path / "without" / "tiny-llama3-Q4_0.gguf")
    with_ = tensor_bytes(tmp_path / "with" / "tiny-llama3-Q4_0.gguf")
    assert without.keys() == with_.keys()
    block_weights = [n for n in read_imatrix(calibrated).sums if n.startswith("blk.")]
    assert len(block_weights) == 14
    for name in block_weights:
        assert with_[name][0] == without[name][0] == "Q4_0"
        assert with_[name][1] != without[name][1], f"{name} is unchanged by the matrix"
    for name in ("blk.0.attn_norm.weight", "output_norm.weight", "rope_freqs.weight"):
        assert with_[name] == without[name]

    entry = manifest["files"][0]["imatrix"]
    assert entry["sha256"] == hashlib.sha256(calibrated.read_bytes()).hexdigest()
    assert entry["slice"] == "dl19-top20" and entry["queries"] == 1 and entry["passages"] == 3
    fields = gguf.GGUFReader(tmp_path / "with" / "tiny-llama3-Q4_0.gguf").fields
    assert fields["quantize.imatrix.file"].contents() == calibrated.name
    assert fields["quantize.imatrix.entries_count"].contents() == 15
    assert "imatrix" not in json.loads((tmp_path / "without" / "manifest.json").read_text())["files"][0]


def test_a_matrix_for_another_model_is_refused(tiny_f32_gguf, tmp_path):
    wrong = Imatrix({"blk.0.attn_q.weight": np.ones(64)}, {"blk.0.attn_q.weight": 10}, ["x"], 1, 10)
    path = write_imatrix(wrong, tmp_path / "wrong.gguf")
    with pytest.raises(UserInputError, match="another model"):
        QuantizeMatrix(path, tiny_f32_gguf)
    with pytest.raises(UserInputError, match="not a GGUF imatrix"):
        read_imatrix(_legacy_dat(tmp_path))
    with pytest.raises(UserInputError, match="not an importance matrix"):
        read_imatrix(tiny_f32_gguf)


def _legacy_dat(tmp_path: Path) -> Path:
    p = tmp_path / "imatrix.dat"
    p.write_bytes(np.array([0], dtype=np.int32).tobytes())
    return p


@pytest.mark.parametrize("qtype", ["IQ2_M", "IQ3_M"])
def test_iq_types_that_need_a_matrix_are_refused_without_one(tiny_f32_gguf, tmp_path, qtype):
    with pytest.raises(UserInputError, match=f"{qtype} need.*importance matrix.*dear-local imatrix"):
        quantize(tiny_f32_gguf, [qtype], tmp_path)
    assert not list(tmp_path.iterdir())
    proc = run_cli("quantize", str(tiny_f32_gguf), "--types", qtype, "--out", str(tmp_path))
    assert proc.returncode == 2 and "--imatrix" in proc.stderr.decode()


# -- calibration and evaluation stay apart --------------------------------------------------------


def test_calibration_that_overlaps_the_evaluation_is_refused():
    noveleval = load_slice("noveleval")
    dl19 = load_slice("dl19-top20", queries=5, passages=2)
    check_disjoint(dl19, noveleval)  # the intended pair: no error
    with pytest.raises(UserInputError, match="is the evaluation slice"):
        check_disjoint(load_slice("noveleval", queries=3, passages=2), noveleval)
    with pytest.raises(UserInputError, match="shares 5 query text"):  # same queries, another slice name
        check_disjoint(dl19, load_slice("dl19-top100", queries=5, passages=2))


def test_a_matrix_file_remembers_its_queries_for_the_overlap_check(calibrated):
    cal = read_imatrix(calibrated).calibration
    check_disjoint(cal, load_slice("noveleval"))
    with pytest.raises(UserInputError, match="shares 1 query text"):
        check_disjoint(cal, load_slice("dl19-top100", queries=3, passages=2))


def test_the_command_refuses_the_eval_slice_before_loading_the_model(tmp_path):
    out = tmp_path / "m.gguf"
    proc = run_cli("imatrix", str(tmp_path), "--out", str(out), "--slice", "noveleval", "--queries", "2")
    assert proc.returncode == 2
    assert "is the evaluation slice" in proc.stderr.decode() and not out.exists()
