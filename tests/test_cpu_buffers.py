"""The loader's CPU buffer choice, and every quant type running on the machine that makes it.

llama.cpp's AMX kernels crash on quantized models on some Intel Xeons
(ggml-org/llama.cpp#20824). The choice is a rule over llama.cpp's system info,
so it is tested here for both kinds of machine; the quant-type tests decode with
each type in a child process on whatever machine runs the tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dear_local.backends.loader import CPU_BUFFER_MODES, choose_cpu_buffers, cpu_features, llama_system_info
from dear_local.errors import UserInputError

# llama_print_system_info() as llama-cpp-python 0.3.36 prints it on the two kinds of machine.
AMX_XEON = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
AVX2_EPYC = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | "
    "OPENMP = 1 | REPACK = 1 | "
)
FEATURES = ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "AVX512", "AVX512_VNNI", "AVX512_BF16",
            "AMX_INT8", "LLAMAFILE", "OPENMP", "REPACK", "NEON", "ARM_FMA"]


def test_amx_build_gets_plain_buffers_by_default():
    choice = choose_cpu_buffers("auto", AMX_XEON)
    assert (choice.mode, choice.use_extra_bufts, choice.requested) == ("plain", False, "auto")
    assert "20824" in choice.reason


def test_avx2_build_keeps_llama_cpps_repacked_buffers():
    choice = choose_cpu_buffers("auto", AVX2_EPYC)
    assert (choice.mode, choice.use_extra_bufts) == ("extra", True)


@pytest.mark.parametrize("info", [AMX_XEON, AVX2_EPYC])
@pytest.mark.parametrize("mode", ["extra", "plain"])
def test_an_explicit_mode_wins_on_either_machine(info, mode):
    assert choose_cpu_buffers(mode, info).mode == mode
    assert choose_cpu_buffers(f"  {mode.upper()} ", info).mode == mode


def test_the_environment_variable_sets_the_mode(monkeypatch):
    monkeypatch.setenv("DEAR_LOCAL_CPU_BUFFERS", "plain")
    assert choose_cpu_buffers(info=AVX2_EPYC).mode == "plain"
    monkeypatch.setenv("DEAR_LOCAL_CPU_BUFFERS", "extra")
    assert choose_cpu_buffers(info=AMX_XEON).mode == "extra"
    monkeypatch.delenv("DEAR_LOCAL_CPU_BUFFERS")
    assert choose_cpu_buffers(info=AMX_XEON).mode == "plain"


@pytest.mark.parametrize("bad", ["amx", "none", "repack", "1"])
def test_an_unknown_mode_is_refused_with_the_valid_ones(bad):
    with pytest.raises(UserInputError, match="auto, extra, plain"):
        choose_cpu_buffers(bad, AVX2_EPYC)


@given(st.dictionaries(st.sampled_from(FEATURES), st.sampled_from(["0", "1"])))
def test_auto_avoids_extra_buffers_exactly_when_the_build_has_amx(flags):
    info = "CPU : " + "".join(f"{k} = {v} | " for k, v in flags.items())
    assert cpu_features(info) == flags
    expected = "plain" if flags.get("AMX_INT8") == "1" else "extra"
    assert choose_cpu_buffers("auto", info).mode == expected


def test_this_machines_system_info_parses_and_decides():
    info = llama_system_info()
    features = cpu_features(info)
    assert features, info
    assert choose_cpu_buffers("auto", info).mode in CPU_BUFFER_MODES


# -- on this machine, with real models ---------------------------------------------------------

# Every type of both manifests' ladders, plus Q4_0 and Q4_1 (the types llama.cpp repacks on AVX2).
LADDER_TYPES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q4_1", "Q4_0", "Q3_K_M", "Q2_K"]


@pytest.fixture(scope="module")
def every_type(standin_bf16_gguf, tmp_path_factory):
    from dear_local_convert.quant.quantize import quantize

    out = tmp_path_factory.mktemp("every-type")
    quantize(standin_bf16_gguf, LADDER_TYPES, out, threads=2)
    return {t: next(out.glob(f"*-{t}.gguf")) for t in LADDER_TYPES} | {"BF16": standin_bf16_gguf}


@pytest.mark.parametrize("qtype", ["BF16", *LADDER_TYPES])
def test_every_quant_type_loads_and_decodes_on_this_machine(every_type, qtype):
    from dear_local.backends.probe import probe_model

    result = probe_model(every_type[qtype], n_tokens=4)
    assert result.ok, f"{qtype}: {result.detail} (CPU buffers {result.cpu_buffers}); try DEAR_LOCAL_CPU_BUFFERS=plain"
    assert result.cpu_buffers == choose_cpu_buffers().mode


def _buffer_log(path, mode: str) -> str:
    """llama.cpp's load log for ``path`` under ``mode``, from a child process."""
    code = (
        "import sys; from dear_local.backends.llama import LlamaCppBackend; "
        "LlamaCppBackend(sys.argv[1], n_ctx=64, cpu_buffers=sys.argv[2], verbose=True).close()"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path), mode], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def test_plain_mode_really_loads_without_extra_buffer_types(every_type):
    if cpu_features(llama_system_info()).get("REPACK") != "1":
        pytest.skip("this llama.cpp build has no repacked CPU buffers")
    extra, plain = _buffer_log(every_type["Q4_0"], "extra"), _buffer_log(every_type["Q4_0"], "plain")
    assert "CPU_REPACK model buffer size" in extra or "AMX model buffer size" in extra
    assert "CPU_REPACK model buffer" not in plain and "AMX model buffer" not in plain
    assert re.search(r"CPU(_Mapped)? model buffer size", plain)


def test_env_prints_the_buffer_choice_and_versions():
    proc = subprocess.run([sys.executable, "-m", "dear_local", "env", "--json"], capture_output=True, text=True,
                          env={**os.environ, "DEAR_LOCAL_CPU_BUFFERS": "plain"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["cpu buffers"]["mode"] == "plain"
    assert report["settings"]["DEAR_LOCAL_CPU_BUFFERS"] == "plain"
    assert report["llama-cpp-python"][0].isdigit()
    assert "AVX" in report["llama.cpp system info"] or "NEON" in report["llama.cpp system info"]


def test_env_with_a_model_decodes_in_a_child_process(standin_gguf):
    proc = subprocess.run([sys.executable, "-m", "dear_local", "env", "--model", str(standin_gguf)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "model probe:" in proc.stdout and "ok: True" in proc.stdout


def test_env_refuses_a_bad_mode_before_loading(standin_gguf):
    proc = subprocess.run([sys.executable, "-m", "dear_local", "env", "--model", str(standin_gguf),
                           "--cpu-buffers", "amx"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Invalid value for '--cpu-buffers'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_environment_setting_is_one_line_naming_the_valid_modes(standin_gguf):
    proc = subprocess.run([sys.executable, "-m", "dear_local", "rerank", "-m", str(standin_gguf), "-q", "capital"],
                          input="Paris.\nBananas.\n", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DEAR_LOCAL_CPU_BUFFERS": "amx"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown CPU buffer mode 'amx': use one of auto, extra, plain (--cpu-buffers or DEAR_LOCAL_CPU_BUFFERS)"
    ]


def test_a_signal_exit_is_named():
    from dear_local.backends.probe import _signal_name

    assert _signal_name(-11) == "SIGSEGV"
    assert _signal_name(-6) == "SIGABRT"
    assert _signal_name(0) is None and _signal_name(1) is None


# -- memory mapping follows the buffers ---------------------------------------------------------

_TENSOR_KINDS = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K"]


def _gguf_of(path, kinds: list[str]):
    """A GGUF whose tensors have the ggml types ``kinds``, one each (zero data, right sizes)."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(path, "llama")
    for i, kind in enumerate(kinds):
        qt = gguf.GGMLQuantizationType[kind]
        block, size = gguf.GGML_QUANT_SIZES[qt]
        w.add_tensor(f"t{i}.weight", np.zeros((2, 256 // block * size), dtype=np.uint8), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@given(st.lists(st.sampled_from(_TENSOR_KINDS), min_size=1, max_size=4), st.sampled_from(["extra", "plain"]))
def test_a_file_is_read_without_mmap_exactly_when_its_weights_are_repacked(tmp_path_factory, kinds, mode):
    from dear_local.backends.loader import use_mmap_for

    path = _gguf_of(tmp_path_factory.mktemp("mmap") / "m.gguf", kinds)
    quantized = any(k not in ("F32", "F16", "BF16") for k in kinds)
    assert use_mmap_for(path, choose_cpu_buffers(mode, AVX2_EPYC)) == (mode == "plain" or not quantized)


def test_a_repacked_model_is_loaded_into_its_own_buffers_not_mapped(every_type):
    if cpu_features(llama_system_info()).get("REPACK") != "1":
        pytest.skip("this llama.cpp build has no repacked CPU buffers")
    extra, bf16 = _buffer_log(every_type["Q4_0"], "extra"), _buffer_log(every_type["BF16"], "extra")
    assert "CPU_REPACK model buffer size" in extra and "CPU_Mapped model buffer" not in extra
    assert "CPU_Mapped model buffer size" in bf16  # float weights are not repacked: they stay mapped
