"""Hostile inputs to quantize and `env --model`, and Ctrl-C while llama.cpp runs.

- A damaged GGUF (truncated anywhere, empty, foreign, a folder, corrupt table of
  contents) is one clear InvalidModelFileError, before llama.cpp sees it.
- An exception or SIGINT inside a ctypes callback llama.cpp calls is not lost:
  it is raised when the native call returns.
- Ctrl-C during `dear-local quantize` stops it: exit 130, no output, no manifest
  entry, no .partial, no empty --out folder.
- A full disk is one line naming it, before or during the quantize.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dear_local.errors import InvalidModelFileError, ModelNotFoundError, QuantizeError
from dear_local.gguf_file import GGML_TYPE_SIZES, check_gguf
from small_disk import in_small_disk, needs_tmpfs
from dear_local.native_calls import CallbackErrors, hold_interrupts

gguf = pytest.importorskip("gguf")

from gguf_files import DAMAGED, tensor_data_end, write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "small-F32.gguf")


# -- the GGUF check ------------------------------------------------------------------------------


def test_type_sizes_match_gguf_py():
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        if qtype.name == "Q8_1":  # gguf-py keeps its old float layout (40 bytes); ggml's block_q8_1 is 36
            assert GGML_TYPE_SIZES[int(qtype)] == (32, 36)
            continue
        assert GGML_TYPE_SIZES[int(qtype)] == (block, size), qtype.name
    assert {0, 1, 8, 10, 12, 14, 23, 30} <= set(GGML_TYPE_SIZES)


@pytest.mark.parametrize("alignment", [None, 64, 256])
def test_a_whole_gguf_passes_and_its_tensor_end_matches_gguf_py(tmp_path, alignment):
    path = write_gguf(tmp_path / "m.gguf", alignment=alignment)
    summary = check_gguf(path)
    assert summary.architecture == "llama" and summary.n_tensors == 5 and summary.version == 3
    assert summary.data_end == tensor_data_end(path) <= summary.size == path.stat().st_size


def test_the_real_llama3_vocab_gguf_passes(llama3_vocab_gguf):
    t0 = time.perf_counter()
    summary = check_gguf(llama3_vocab_gguf)
    assert summary.architecture == "llama"
    assert time.perf_counter() - t0 < 10  # 128k tokens and 280k merges are read, not parsed into objects


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_cut_short_of_the_tensor_data_is_reported_as_truncated(small_gguf, tmp_path_factory, data):
    blob = small_gguf.read_bytes()
    end = tensor_data_end(small_gguf)
    cut = data.draw(st.integers(min_value=1, max_value=end - 1))
    path = tmp_path_factory.mktemp("cut") / "cut.gguf"
    path.write_bytes(blob[:cut])
    with pytest.raises(InvalidModelFileError, match="truncated|not a GGUF file") as info:
        check_gguf(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    if cut >= 4:
        assert "truncated" in str(info.value) and "re-download" in str(info.value)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=400), version=st.sampled_from([2, 3]))
def test_random_bytes_after_a_gguf_header_never_crash_the_check(tmp_path_factory, body, version):
    path = tmp_path_factory.mktemp("rand") / "r.gguf"
    path.write_bytes(b"GGUF" + version.to_bytes(4, "little") + body)
    try:
        summary = check_gguf(path)
    except InvalidModelFileError as exc:
        assert "\n" not in str(exc)
    else:
        assert summary.data_end <= summary.size


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=24, max_value=200), value=st.integers(min_value=0, max_value=255))
def test_a_corrupted_table_of_contents_is_reported_or_still_consistent(small_gguf, tmp_path_factory, pos, value):
    blob = bytearray(small_gguf.read_bytes())
    blob[pos] = value
    path = tmp_path_factory.mktemp("flip") / "f.gguf"
    path.write_bytes(bytes(blob))
    try:
        summary = check_gguf(path)
    except InvalidModelFileError as exc:
        assert "truncated" in str(exc) or "corrupt" in str(exc)
    else:
        assert summary.data_end <= summary.size


@DAMAGED
def test_each_kind_of_bad_file_gets_its_own_message(tmp_path, make, message):
    path = tmp_path / "bad.gguf"
    make(path)
    with pytest.raises(InvalidModelFileError, match=message):
        check_gguf(path)
    with pytest.raises(ModelNotFoundError):
        check_gguf(tmp_path / "missing.gguf")


# -- `dear-local env --model` on damaged files --------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "empty", "wrong-magic", "folder"])
def test_env_reports_a_damaged_model_file_as_such(cli, small_gguf, tmp_path, kind):
    path = tmp_path / "m.gguf"
    if kind == "truncated":
        path.write_bytes(small_gguf.read_bytes()[: tensor_data_end(small_gguf) - 10])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong-magic":
        path.write_bytes(b"\x00" * 64)
    else:
        path.mkdir()
    code, out, err = cli("env", "--model", str(path))
    assert code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert "cpu-buffers" not in err and "bug report" not in err
    assert {"truncated": "truncated", "empty": "empty", "wrong-magic": "not a GGUF", "folder": "folder"}[kind] in err


def test_env_reports_a_model_llama_cpp_refuses_without_blaming_cpu_buffers(cli, tmp_path):
    path = write_gguf(tmp_path / "odd.gguf", arch="no-such-architecture")  # whole, but no model llama.cpp knows
    code, out, err = cli("env", "--model", str(path))
    assert code == 2, err
    assert "could not load" in err and "cpu-buffers" not in err and "bug report" not in err


# -- callbacks and Ctrl-C --------------------------------------------------------------------------

_libc = ctypes.CDLL(None)
_CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))


def _qsort(values: list[int], compare) -> list[int]:
    """Sort through libc's qsort, a real native call that calls ``compare`` back."""
    arr = (ctypes.c_int * len(values))(*values)
    _libc.qsort(arr, len(values), ctypes.sizeof(ctypes.c_int), _CMP(compare))
    return list(arr)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError, SystemExit])
def test_an_exception_in_a_native_callback_is_raised_after_the_call(exc):
    errors = CallbackErrors()
    calls = []

    def compare(a, b):
        calls.append(1)
        if len(calls) == 3:
            raise exc("from the callback")
        return a[0] - b[0]

    with pytest.raises(exc, match="from the callback"):
        with hold_interrupts(errors):
            _qsort([5, 3, 9, 1, 7, 2], errors.wrap(compare, 0))
    assert len(calls) > 3  # the native call went on to its end; the error waited for it


def test_sigint_during_a_native_call_is_held_and_raised_after_it():
    errors = CallbackErrors()
    seen = []

    def compare(a, b):
        if not seen:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while C is running
        seen.append(errors.interrupted)
        return a[0] - b[0]

    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with hold_interrupts(errors):
            out = _qsort([4, 2, 3, 1], errors.wrap(compare, 0))
            assert out == [1, 2, 3, 4]  # sorted: nothing was lost inside the callback
    assert any(seen) and signal.getsignal(signal.SIGINT) is previous


def test_log_capture_raises_what_its_line_handler_raised(llama3_vocab_gguf):
    from dear_local_convert.llama_cpp_lib import LogCapture, load_vocab

    lines = []

    def on_line(line):
        lines.append(line)
        if len(lines) == 2:
            raise KeyboardInterrupt

    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with pytest.raises(KeyboardInterrupt):
        with LogCapture(on_line):
            model = llama_cpp.llama_model_load_from_file(str(llama3_vocab_gguf).encode(), params)
    assert model and len(lines) > 2  # the load finished; the interrupt came after it
    llama_cpp.llama_model_free(model)
    with load_vocab(llama3_vocab_gguf) as vocab:  # logging works again afterwards
        assert vocab.tokenize("hello")


def test_ctrl_c_during_a_model_load_cancels_it_through_the_progress_callback(standin_gguf):
    import llama_cpp

    from dear_local.backends.loader import _model_params

    errors = CallbackErrors()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt) as info:
        with hold_interrupts(errors), _model_params(True, errors):
            errors.interrupted = True  # as the SIGINT handler sets it when Ctrl-C lands during the load
            llama_cpp.Llama(model_path=str(standin_gguf), n_ctx=64, verbose=False)
    assert isinstance(info.value.__cause__, ValueError)  # llama.cpp cancelled the load: no model was made
    assert time.perf_counter() - t0 < 30


# -- quantize ---------------------------------------------------------------------------------------


def test_quantize_of_a_truncated_gguf_is_one_clear_error_and_leaves_nothing(small_gguf, tmp_path):
    from dear_local_convert.quant.quantize import quantize

    src = tmp_path / "m-BF16.gguf"
    src.write_bytes(small_gguf.read_bytes()[:-40])
    out = tmp_path / "new" / "q"
    with pytest.raises(InvalidModelFileError, match="truncated.*re-download"):
        quantize(src, ["Q8_0"], out)
    assert not (tmp_path / "new").exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_quantize_refuses_a_gguf_cut_anywhere_before_its_tensor_data_ends(small_gguf, tmp_path_factory, data):
    from dear_local_convert.quant.quantize import quantize

    cut = data.draw(st.integers(min_value=0, max_value=tensor_data_end(small_gguf) - 1))
    folder = tmp_path_factory.mktemp("q")
    src = folder / "m-BF16.gguf"
    src.write_bytes(small_gguf.read_bytes()[:cut])
    with pytest.raises(InvalidModelFileError, match="truncated|empty|not a GGUF"):
        quantize(src, ["Q4_K_M"], folder / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["m-BF16.gguf"]


def test_a_failed_quantize_removes_the_out_folder_it_made(small_gguf, tmp_path):
    from dear_local_convert.quant.quantize import quantize

    out = tmp_path / "made" / "by" / "run"
    with pytest.raises(QuantizeError, match="could not quantize"):
        quantize(small_gguf, ["Q8_0"], out)  # whole, but no model llama.cpp can load (no hparams)
    assert not (tmp_path / "made").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(QuantizeError):
        quantize(small_gguf, ["Q8_0"], kept)
    assert kept.is_dir() and list(kept.iterdir()) == []


def _default_sigint() -> None:
    # A shell starts a command with Ctrl-C's default disposition; a test process may hold SIGINT
    # ignored (an earlier test, or the test runner), and an ignored signal stays ignored across exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dear_local", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint, **kw)


def test_ctrl_c_during_quantize_stops_it_and_leaves_nothing(standin_bf16_gguf, tmp_path):
    out = tmp_path / "out"
    proc = _cli("quantize", str(standin_bf16_gguf), "--types", "Q4_K_M", "--out", str(out), "--threads", "1",
                start_new_session=True)
    partial = out / "smollm2-135m-instruct-Q4_K_M.gguf.partial"
    deadline = time.monotonic() + 120
    while not (partial.is_file() and partial.stat().st_size > 0) and proc.poll() is None:
        assert time.monotonic() < deadline, "the quantize never started writing"
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert not out.exists(), list(out.iterdir())  # no output, no .partial, no manifest, no empty folder
    time.sleep(0.5)
    assert not partial.exists()  # the quantizer process is gone, not still writing


def test_a_killed_quantize_leaves_no_quantizer_process_writing(standin_bf16_gguf, tmp_path):
    out = tmp_path / "out"
    proc = _cli("quantize", str(standin_bf16_gguf), "--types", "Q4_K_M", "--out", str(out), "--threads", "1")
    partial = out / "smollm2-135m-instruct-Q4_K_M.gguf.partial"
    deadline = time.monotonic() + 120
    while not (partial.is_file() and partial.stat().st_size > 0) and proc.poll() is None:
        assert time.monotonic() < deadline, "the quantize never started writing"
        time.sleep(0.01)
    proc.kill()  # SIGKILL: the parent gets no chance to clean up; its quantizer process sees stdin close
    proc.communicate()
    deadline = time.monotonic() + 30
    while partial.exists():
        assert time.monotonic() < deadline, "the quantizer process kept writing after its parent died"
        time.sleep(0.05)
    assert not (out / "smollm2-135m-instruct-Q4_K_M.gguf").exists() and not (out / "manifest.json").exists()


def _quantize_on_small_disk(src: Path, mount: Path, size_kib: int, qtype: str) -> subprocess.CompletedProcess:
    """`dear-local quantize` into a tmpfs of ``size_kib`` mounted at ``mount`` (in a private mount namespace)."""
    script = f"{sys.executable} -m dear_local quantize {src} --types {qtype} --out {mount}/q; echo left: $(ls -A {mount})"
    return in_small_disk(mount, size_kib, script, timeout=600)


@needs_tmpfs
@pytest.mark.parametrize("when", ["before", "during"])
def test_quantize_on_a_full_disk_names_the_disk(tiny_f32_gguf, tmp_path, when):
    from dear_local_convert.quant.quantize import gguf_facts, min_output_bytes

    need = min_output_bytes(gguf_facts(tiny_f32_gguf)["n_params"], "Q8_0")
    # "before": too small for the lower bound; "during": passes it, but not the metadata and wider tensors
    size_kib = need // 2048 if when == "before" else need // 1024 + 1024
    proc = _quantize_on_small_disk(tiny_f32_gguf, tmp_path / "disk", size_kib, "Q8_0")
    err = proc.stderr
    assert "error: the disk holding" in err and "--out" in err, err
    assert ("needs at least" if when == "before" else "is full") in err, err
    assert err.strip().count("\n") == 0 and "iostream" not in err and "Traceback" not in err
    assert proc.stdout.strip().endswith("left:"), proc.stdout  # no .partial, no empty q/ folder
