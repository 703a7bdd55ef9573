"""The ranking-calibrated importance matrix, on the tiny Llama-3.1.

Acceptance: the hooks' means match a hand computation; the file round-trips
(and llama.cpp's own GGUF reader accepts it); quantizing with it changes the
weight tensors; calibration on a slice that overlaps the evaluation slice is
refused; IQ types that need a matrix are refused without one.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dear_local_convert.quant.imatrix import ImatrixCollector, check_disjoint, gguf_weight_names
from dear_local_convert.quant.imatrix_file import Imatrix, QuantizeMatrix, read_imatrix, row_lengths, write_imatrix
from dear_local_convert.quant.quantize import _quantize_one, quantize
from dear_local_convert.slices import load_slice
from dear_local.errors import UserInputError
from optional import needs

pytestmark = needs("torch", "transformers", "gguf", "llama_cpp")


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dear_local", *args], capture_output=True, env=dict(os.environ), timeout=600
    )


@pytest.fixture(scope="module")
def tiny_model(tiny_llama3_dir):
    import torch
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


# -- collection ---------------------------------------------------------------------------------


def test_every_linear_maps_to_its_gguf_weight(tiny_model, tiny_f32_gguf):
    names = gguf_weight_names(tiny_model)
    assert names["model.layers.0.self_attn.q_proj"] == "blk.0.attn_q.weight"
    assert names["model.layers.1.mlp.down_proj"] == "blk.1.ffn_down.weight"
    assert names["lm_head"] == "output.weight"  # untied, like DeAR-8B
    weights = {n for n in row_lengths(tiny_f32_gguf) if n.startswith("blk.") or n == "output.weight"}
    assert set(names.values()) == weights - {n for n in weights if "norm" in n}


def test_hook_means_match_a_hand_computation(tiny_model):
    import torch

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


class GgmlFile:
    """A GGUF file opened with llama.cpp's own reader (libggml-base), data loaded.

    gguf-py's reader parses the whole Llama-3 vocabulary first (many seconds per file);
    llama.cpp's reader does not, and it is the reader whose acceptance matters.
    """

    def __init__(self, path: Path) -> None:
        import llama_cpp

        lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))

        class InitParams(ctypes.Structure):
            _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]

        vp, i64 = ctypes.c_void_p, ctypes.c_int64
        for fn, res, args in (
            ("gguf_init_from_file", vp, [ctypes.c_char_p, InitParams]),
            ("gguf_find_key", i64, [vp, ctypes.c_char_p]),
            ("gguf_get_val_u32", ctypes.c_uint32, [vp, i64]),
            ("gguf_get_val_str", ctypes.c_char_p, [vp, i64]),
            ("gguf_get_arr_n", ctypes.c_size_t, [vp, i64]),
            ("gguf_free", None, [vp]),
            ("ggml_free", None, [vp]),
            ("ggml_get_first_tensor", vp, [vp]),
            ("ggml_get_next_tensor", vp, [vp, vp]),
            ("ggml_get_name", ctypes.c_char_p, [vp]),
            ("ggml_get_data", vp, [vp]),
            ("ggml_nbytes", ctypes.c_size_t, [vp]),
        ):
            getattr(lib, fn).restype = res
            getattr(lib, fn).argtypes = args
        self.lib, ctx = lib, ctypes.c_void_p()
        g = lib.gguf_init_from_file(str(path).encode(), InitParams(False, ctypes.pointer(ctx)))
        assert g, f"llama.cpp's gguf_init_from_file refused {path}"
        try:
            self.tensors = {}
            t = lib.ggml_get_first_tensor(ctx)
            while t:
                if lib.ggml_get_name(t) == b"GGUF tensor data binary blob":  # the loader's buffer, not a tensor
                    t = lib.ggml_get_next_tensor(ctx, t)
                    continue
                # ggml_tensor begins with its enum ggml_type
                ttype = ctypes.cast(t, ctypes.POINTER(ctypes.c_int32))[0]
                data = ctypes.string_at(lib.ggml_get_data(t), lib.ggml_nbytes(t))
                self.tensors[lib.ggml_get_name(t).decode()] = (ttype, data)
                t = lib.ggml_get_next_tensor(ctx, t)
            key = lambda k: lib.gguf_find_key(g, k.encode())  # noqa: E731
            self.keys = {}
            for k, kind in (
                ("general.type", "str"), ("general.architecture", "str"), ("imatrix.datasets", "arr"),
                ("imatrix.chunk_count", "u32"), ("imatrix.chunk_size", "u32"), ("quantize.imatrix.file", "str"),
                ("quantize.imatrix.entries_count", "u32"), ("quantize.imatrix.chunks_count", "u32"),
            ):
                i = key(k)
                if i != -1:
                    get = {"str": lib.gguf_get_val_str, "arr": lib.gguf_get_arr_n, "u32": lib.gguf_get_val_u32}[kind]
                    v = get(g, i)
                    self.keys[k] = v.decode() if isinstance(v, bytes) else int(v)
        finally:
            lib.gguf_free(g)
            lib.ggml_free(ctx)


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

    seen = GgmlFile(calibrated)
    assert seen.keys["general.type"] == "imatrix" and "general.architecture" not in seen.keys
    assert seen.keys["imatrix.datasets"] == 1
    assert (seen.keys["imatrix.chunk_count"], seen.keys["imatrix.chunk_size"]) == (m.chunk_count, m.chunk_size)
    assert set(seen.tensors) == {f"{n}.in_sum2" for n in m.sums} | {f"{n}.counts" for n in m.sums}
    assert {t for t, _ in seen.tensors.values()} == {0}  # all F32
    counts = np.frombuffer(seen.tensors["blk.0.attn_q.weight.counts"][1], dtype=np.float32)
    assert counts.tolist() == [m.counts["blk.0.attn_q.weight"]]


# -- quantizing with it -------------------------------------------------------------------------


def test_quantizing_with_the_matrix_changes_the_weights(calibrated, tiny_f32_gguf, tmp_path):
    _quantize_one(tiny_f32_gguf, tmp_path / "without.gguf", "Q4_0", 2)  # the same call, no matrix
    manifest = quantize(tiny_f32_gguf, ["Q4_0"], tmp_path / "with", threads=2, imatrix=calibrated)
    without = GgmlFile(tmp_path / "without.gguf").tensors
    quant = GgmlFile(tmp_path / "with" / "tiny-llama3-Q4_0.gguf")
    with_ = quant.tensors
    assert without.keys() == with_.keys()
    block_weights = [n for n in read_imatrix(calibrated).sums if n.startswith("blk.")]
    assert len(block_weights) == 14
    for name in block_weights:
        assert with_[name][0] == without[name][0] == 2  # GGML_TYPE_Q4_0
        assert with_[name][1] != without[name][1], f"{name} is unchanged by the matrix"
    for name in ("blk.0.attn_norm.weight", "output_norm.weight", "rope_freqs.weight"):
        assert with_[name] == without[name]
    # `check` tells the two apart in one report: the manifest beside the file names the matrix.
    from dear_local_convert.agreement.check import quant_label

    assert quant_label(tmp_path / "with" / "tiny-llama3-Q4_0.gguf") == "Q4_0+imatrix"
    (tmp_path / "plain").mkdir()
    (tmp_path / "without.gguf").rename(tmp_path / "plain" / "tiny-llama3-Q4_0.gguf")
    assert quant_label(tmp_path / "plain" / "tiny-llama3-Q4_0.gguf") == "Q4_0"

    entry = manifest["files"][0]["imatrix"]
    assert entry["sha256"] == hashlib.sha256(calibrated.read_bytes()).hexdigest()
    assert entry["slice"] == "dl19-top20" and entry["queries"] == 1 and entry["passages"] == 3
    assert quant.keys["quantize.imatrix.file"] == calibrated.name
    assert quant.keys["quantize.imatrix.entries_count"] == 15
    assert quant.keys["quantize.imatrix.chunks_count"] == 1


def test_a_matrix_for_another_model_or_no_matrix_file_is_refused(tiny_f32_gguf, tmp_path):
    import gguf

    wrong = Imatrix({"blk.0.attn_q.weight": np.ones(64)}, {"blk.0.attn_q.weight": 10}, ["x"], 1, 10)
    path = write_imatrix(wrong, tmp_path / "wrong.gguf")
    with pytest.raises(UserInputError, match="rows hold 128.*another model"):
        QuantizeMatrix(path, tiny_f32_gguf)
    alien = Imatrix({"blk.7.attn_q.weight": np.ones(128)}, {"blk.7.attn_q.weight": 10}, ["x"], 1, 10)
    with pytest.raises(UserInputError, match="lacks.*another model"):
        QuantizeMatrix(write_imatrix(alien, tmp_path / "alien.gguf"), tiny_f32_gguf)

    legacy = tmp_path / "imatrix.dat"
    legacy.write_bytes(np.array([0], dtype=np.int32).tobytes())
    with pytest.raises(UserInputError, match="not a GGUF imatrix"):
        read_imatrix(legacy)
    model = gguf.GGUFWriter(tmp_path / "model.gguf", "llama")
    model.add_tensor("blk.0.attn_q.weight", np.ones((2, 128), dtype=np.float32))
    model.write_header_to_file()
    model.write_kv_data_to_file()
    model.write_tensors_to_file()
    model.close()
    with pytest.raises(UserInputError, match="not an importance matrix"):
        read_imatrix(tmp_path / "model.gguf")


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
