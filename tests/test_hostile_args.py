"""Arguments checked up front, in the caller's terms: Python names from the API, flags from the CLI.

Every keyword of ``Reranker(...)`` and ``Profile.with_`` is checked for type and range before
any work; every numeric flag has a finite bound and every choice flag is a choice, checked
before anything is printed; odd files (devices, FIFOs, UTF-16 text) are named as what they are;
``quantize`` resumes a run that was stopped part way.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dear_local import Profile, Reranker
from dear_local.contract.profile import StrideError
from dear_local.errors import ContextOverflowError, DearLocalError, UnknownProfileError, UserInputError
from fake_backend import FakeBackend

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- Python API ---------------------------------------------------------------------------------

not_numbers = st.one_of(st.text(max_size=5), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                        st.builds(object), st.binary(max_size=3))
non_integral = st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not f.is_integer() if math.isfinite(f) else True)
ints_or_not = st.one_of(not_numbers.filter(lambda v: v is not None), non_integral, st.just(2.0))


def _bad(lo: float, hi: float, integer: bool, optional: bool):
    """Values that are of the wrong type, out of [lo, hi], or not finite."""
    out_of_range = st.one_of(st.integers(max_value=int(lo) - 1), st.integers(min_value=int(hi) + 1))
    wrong = ints_or_not if integer else st.one_of(
        not_numbers.filter(lambda v: v is not None),
        st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308]),
    )
    bad = st.one_of(wrong, out_of_range)
    return bad if optional else st.one_of(bad, st.none())


BAD = {
    "n_threads": _bad(1, 1024, True, True),
    "n_gpu_layers": _bad(-1, 1 << 16, True, False),
    "n_ctx": _bad(1, 1 << 20, True, True),
    "request_timeout": st.one_of(_bad(1e-9, 86400, False, False), st.sampled_from([0, 0.0, -1, -0.5])),
    "lora_scale": _bad(-100, 100, False, False),
    "cpu_buffers": st.one_of(st.text(max_size=6).filter(lambda t: t not in ("auto", "extra", "plain")),
                             st.integers(), st.booleans()),
    "protocol": st.one_of(st.text(max_size=12).filter(lambda t: t not in ("auto", "llama-server", "openai")),
                          st.none(), st.integers()),
    "servers": st.one_of(st.text(min_size=1, max_size=30), st.integers(), st.lists(st.integers(), min_size=1, max_size=2),
                         st.just([""]), st.just(["http://127.0.0.1:1", None])),
    "served_model": st.one_of(st.integers(), st.just(""), st.just("   "), st.booleans()),
    "lora": st.one_of(st.integers(), st.booleans(), st.lists(st.text(), max_size=1)),
    "verbose": st.one_of(st.integers(), st.text(max_size=3), st.none()),
    "backend": st.one_of(st.integers(), st.text(min_size=1, max_size=3)),
    "profile": st.one_of(st.integers(), st.text(min_size=1, max_size=3), st.dictionaries(st.text(), st.integers())),
    "window": _bad(1, 100, True, True),
    "stride": _bad(1, 100, True, True),
    "template": st.one_of(st.integers(), st.booleans(), st.lists(st.text(), max_size=1)),
    "decoding": st.one_of(st.integers(), st.booleans(), st.lists(st.text(), max_size=1)),
}


@FAST
@given(data=st.data(), name=st.sampled_from(sorted(BAD)))
def test_every_reranker_keyword_is_checked_up_front_and_named(data, name):
    value = data.draw(BAD[name])
    with pytest.raises(UserInputError) as info:
        Reranker("no-such-model-anywhere", **{name: value})
    message = str(info.value)
    assert message.startswith(name) and "\n" not in message, message
    assert "--" not in message.split(";")[0], message  # Python names, not flags


@FAST
@given(data=st.data(), name=st.sampled_from(["window", "stride", "template", "decoding"]))
def test_profile_with_names_the_bad_field(data, name):
    value = data.draw(BAD[name].filter(lambda v: v is not None))
    with pytest.raises(UnknownProfileError) as info:
        Profile().with_(**{name: value})
    assert str(info.value).startswith(name), str(info.value)


@FAST
@given(n=st.integers(1, 100), kind=st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, int]))
def test_numpy_integers_count_as_ints(n, kind):
    if kind is np.int8 or kind is np.uint8:
        n = min(n, 100)
    value = kind(n)
    profile = Profile(window=100, stride=1).with_(window=value, stride=kind(1))
    assert profile.window == n and type(profile.window) is int
    reranker = Reranker("fake", backend=FakeBackend())
    docs = [f"passage {i}" for i in range(3)]
    assert len(reranker.rerank("q", docs, top_n=kind(min(n, 3))).results) == min(n, 3)
    assert len(reranker.rank("q", docs, top_k=kind(1))) == 1


@FAST
@given(window=st.integers(1, 9))
def test_a_window_below_the_profiles_stride_says_where_the_stride_came_from(window):
    with pytest.raises(StrideError, match=rf"^stride \(the profile's 10\) must be at most window \({window}\); pass stride="):
        Profile().with_(window=window)
    assert Profile().with_(window=window, stride=window).stride == window


@pytest.mark.parametrize("option, value, name", [("n_ctx", 4096, "n_ctx"), ("flash_attn", True, "flash_attn=True")])
def test_a_servers_own_setting_with_servers_is_refused_in_python_terms(fake_gguf, option, value, name):
    """What a server decides when it starts (its context, its attention kernels) is refused here, naming it."""
    with pytest.raises(UserInputError, match=f"^{name} has no effect with servers"):
        Reranker(str(fake_gguf), servers=["http://127.0.0.1:1"], **{option: value})


def test_a_local_context_overflow_advises_n_ctx():
    reranker = Reranker("fake", backend=FakeBackend(n_ctx=64))
    with pytest.raises(ContextOverflowError, match=r"a larger --n-ctx$"):
        reranker.rerank("q", ["a long passage " * 20, "b"])


def test_a_server_context_overflow_advises_the_servers_own_setting():
    from dear_local.remote.backend import RemoteBackend

    assert "--n-ctx" not in RemoteBackend.context_advice
    assert "--ctx-size" in RemoteBackend.context_advice and "--max-model-len" in RemoteBackend.context_advice


@FAST
@given(scheme=st.sampled_from(["HTTP", "Http", "hTTp", "HTTPS", "Https"]))
def test_an_upper_case_scheme_is_accepted(scheme):
    from dear_local.remote.fleet import Fleet

    fleet = Fleet([f"{scheme}://127.0.0.1:1"])
    assert fleet.servers[0].url.startswith(scheme.lower() + "://")


# -- CLI: numeric and choice flags ----------------------------------------------------------------

RERANK_NUMERIC = ["--top-n", "--window", "--stride", "--request-timeout", "--lora-scale", "--depth", "--in-flight",
                  "--n-ctx", "--threads", "--gpu-layers"]
SERVE_NUMERIC = ["--port", "--timeout", "--deadline", "--max-queue", "--max-documents", "--max-body-bytes", "--in-flight",
                 "--request-timeout", "--lora-scale", "--window", "--stride", "--n-ctx", "--threads", "--gpu-layers"]
HUGE = st.sampled_from(["inf", "-inf", "nan", "1e308", "-1e308", "Infinity", str(10**30), str(-(10**30)), "1e400"])


@FAST
@given(flag=st.sampled_from(RERANK_NUMERIC), value=HUGE)
def test_every_rerank_numeric_flag_refuses_values_past_its_bound(cli, fake_gguf, flag, value):
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", flag, value, stdin="a\nb\n")
    assert code == 2 and out == "", (flag, value, err)
    assert "unexpected" not in err and "Traceback" not in err and flag in err, err


@FAST
@given(flag=st.sampled_from(SERVE_NUMERIC), value=HUGE)
def test_every_serve_numeric_flag_refuses_values_past_its_bound_before_the_banner(cli, fake_gguf, flag, value):
    code, out, err = cli("serve", "-m", str(fake_gguf), "--port", "0", flag, value)
    assert code == 2 and "serving" not in err, (flag, value, err)
    assert "unexpected" not in err and "Traceback" not in err and flag in err, err


@FAST
@given(level=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC_", min_size=1, max_size=10).filter(
    lambda t: t not in ("critical", "error", "warning", "info", "debug", "trace")))
def test_serve_refuses_an_unknown_log_level_before_the_banner(cli, fake_gguf, level):
    code, _, err = cli("serve", "-m", str(fake_gguf), "--port", "0", "--log-level", level)
    assert code == 2 and "serving" not in err and "--log-level" in err and "unexpected" not in err, err


def test_serve_refuses_an_empty_api_key(cli, fake_gguf):
    code, _, err = cli("serve", "-m", str(fake_gguf), "--port", "0", "--api-key", "")
    assert code == 2 and err.startswith("error: --api-key is empty") and err.count("\n") == 1, err


def test_server_settings_refuse_an_empty_key():
    from dear_local.server.config import ServerSettings

    with pytest.raises(UserInputError, match="is empty"):
        ServerSettings(model="m", api_key="")


@FAST
@given(window=st.integers(1, 9))
def test_cli_window_alone_names_the_flags_and_the_profiles_stride(cli, fake_gguf, window):
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--window", str(window), stdin="a\nb\n")
    assert code == 2, err
    assert err == (f"error: --stride (default 10 from the model's profile) must be at most --window {window}; "
                   f"pass --stride {window} or less\n"), err


@FAST
@given(stride=st.integers(21, 100))
def test_cli_stride_alone_names_the_profiles_window(cli, fake_gguf, stride):
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--stride", str(stride), stdin="a\nb\n")
    assert code == 2 and "--window (default 20 from the model's profile)" in err and "stride_" not in err, err


@pytest.mark.parametrize("flag", ["--top-n", "--window", "--stride"])
def test_cli_zero_is_refused_by_flag_name(cli, fake_gguf, flag):
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", flag, "0", stdin="a\nb\n")
    assert code == 2 and flag in err and "top_n" not in err and "window must" not in err, err


@pytest.mark.parametrize("args, advice", [(["--n-ctx", "4096"], "--ctx-size"), (["--flash-attn"], "llama-server --flash-attn")])
def test_cli_a_servers_own_setting_with_server_is_refused(cli, fake_gguf, args, advice):
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--server", "http://127.0.0.1:1", *args,
                       stdin="a\nb\n")
    assert code == 2 and err.startswith(f"error: {args[0]} has no effect with --server") and advice in err, err


# -- odd files and paths ----------------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "model.gguf"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("which", ["/dev/null", "/dev/zero", "fifo"])
def test_a_model_that_is_not_a_regular_file_is_named_as_such(cli, fifo, which):
    path = str(fifo) if which == "fifo" else which
    code, _, err = cli("rerank", "-m", path, "-q", "q", stdin="a\n")
    kind = "named pipe (FIFO)" if which == "fifo" else "character device"
    assert code == 2 and f"{kind}, not a regular file" in err and "does not exist" not in err, err


@pytest.mark.parametrize("which", ["/dev/null", "fifo"])
def test_a_lora_that_is_not_a_regular_file_is_named_as_such(fake_gguf, fifo, which):
    from dear_local.backends.lora import check_lora_file

    with pytest.raises(DearLocalError, match="not a regular file"):
        check_lora_file(str(fifo) if which == "fifo" else which)


@FAST
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
           lambda t: not t.startswith("\x00")),  # FF FE 00 00 is UTF-32's byte-order mark too
       encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32"]))
def test_utf16_and_utf32_input_gets_the_right_iconv_advice(tmp_path_factory, text, encoding):
    from dear_local.inputs import read_lines_request, read_text

    bom = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff"}.get(encoding, "")
    data = (bom + text + "\n").encode(encoding)
    path = tmp_path_factory.mktemp("enc") / "docs.txt"
    path.write_bytes(data)
    family = "utf-32" if encoding == "utf-32" else "utf-16"
    for read in (lambda: read_text(path), lambda: read_lines_request(path, None, "q")):
        try:
            read()
        except UserInputError as exc:
            assert f"iconv -f {family} " in str(exc) and "latin1" not in str(exc), str(exc)


@pytest.mark.parametrize("out", ["-", "/nonexistent-dear-local-folder/x.trec"])
def test_rerank_out_refuses_dash_and_a_missing_folder(cli, fake_gguf, out):
    code, stdout, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--out", out, stdin="a\n")
    assert code == 2 and err.startswith("error: --out") and stdout == "", err
    assert not Path("-").exists() and not Path("/nonexistent-dear-local-folder").exists()


# -- quantize: resume after an interrupt ------------------------------------------------------------

def test_quantize_stopped_by_sigterm_resumes_keeping_the_finished_type(standin_bf16_gguf, tmp_path):
    out = tmp_path / "q"
    cmd = [sys.executable, "-m", "dear_local", "quantize", str(standin_bf16_gguf), "--types", "Q8_0,Q4_0",
           "--out", str(out), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    partial = out / "smollm2-135m-instruct-Q4_0.gguf.partial"
    deadline = time.monotonic() + 180
    while not (partial.is_file() and partial.stat().st_size > 0) and proc.poll() is None:
        assert time.monotonic() < deadline, "the second type never started"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "smollm2-135m-instruct-Q8_0.gguf"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "Q8_0     already built, kept" in again.stdout and "smollm2-135m-instruct-Q4_0.gguf" in again.stdout
    import json

    files = {e["type"] for e in json.loads((out / "manifest.json").read_text())["files"]}
    assert files == {"Q8_0", "Q4_0"} and not list(out.glob("*.partial"))
