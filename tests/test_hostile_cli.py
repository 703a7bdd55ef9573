"""Hostile input to the CLI's shared layers: secrets, terminal escapes, model references, load
settings and runs whose answers do not parse (issue 22, findings 1, 2, 12 and 17).

Each test covers a class of inputs, mostly as a hypothesis property over real code paths
(``dear-local env``'s report, the CLI's error printer, the table renderer, the model store).
"""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dear_local.errors import ModelNotFoundError, UnknownModelError, UserInputError

# Secret values long enough to be masked anywhere (short ones are masked only as whole settings),
# with a marker so that a value cannot occur in the report by chance ("000000", "llama.").
SECRETS = st.text(alphabet=string.ascii_letters + string.digits + "-_.~!$", min_size=3, max_size=24).map(
    lambda s: "Zq9" + s
)
SECRET_NAMES = st.sampled_from([
    "DEAR_LOCAL_API_KEY", "DEAR_LOCAL_SERVER_API_KEY", "DEAR_LOCAL_TOKEN", "DEAR_LOCAL_HF_TOKEN",
    "DEAR_LOCAL_PASSWORD", "DEAR_LOCAL_CLIENT_SECRET", "DEAR_LOCAL_APIKEY", "DEAR_LOCAL_AUTH",
])
PROFILE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Properties that run the whole CLI per example: fewer examples, the same classes.
CLI_PROFILE = settings(PROFILE, max_examples=12)


@PROFILE
@given(name=SECRET_NAMES, value=SECRETS, url_password=SECRETS)
def test_env_report_never_shows_a_secret_setting_or_url_password(name, value, url_password, monkeypatch):
    from dear_local.env_report import collect, format_report

    monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEAR_LOCAL_SERVER", f"http://admin:{url_password}@127.0.0.1:8080/v1")
    report = collect()
    for text in (format_report(report), json.dumps(report)):
        assert value not in text and url_password not in text
        assert name in text  # the setting is named, so a bug report still says it was set
    assert report["settings"][name] == "*** (set)"


@settings(CLI_PROFILE, max_examples=6)
@given(password=SECRETS, user=st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8),
       scheme=st.sampled_from(["http", "https", "HTTP"]))
def test_errors_never_echo_credentials_from_a_server_url(password, user, scheme, cli, fake_gguf):
    url = f"{scheme}://{user}:{password}@127.0.0.1:1"
    assume(password not in f"{scheme}://{user}@127.0.0.1:1 {fake_gguf}")  # the user name is shown, by design
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--server", url, "--request-timeout", "1", "--server-retries", "0",
                         stdin="a\nb\n")
    assert code != 0 and err.startswith("error:")
    assert password not in out + err


@CLI_PROFILE
@given(name=SECRET_NAMES, value=SECRETS)
def test_errors_never_echo_a_secret_setting(name, value, cli, monkeypatch):
    # a model path that embeds the secret: the "does not exist" error would quote it
    monkeypatch.setenv(name, value)
    code, _, err = cli("rerank", "-m", f"/nonexistent/{value}.gguf", "-q", "q", stdin="a\n")
    assert code == 2 and err.startswith("error:") and value not in err


CONTROL = st.characters(codec="utf-8", categories=["Cc"]) | st.sampled_from(
    ["\u202e", "\u2066", "\u200f", "\u2028", "\u2029", "\x1b]0;pwned\x07", "\x1b[2J", "\x9b31m"]
)


@CLI_PROFILE
@given(parts=st.lists(st.text(max_size=5) | CONTROL, min_size=1, max_size=8))
def test_table_output_never_carries_a_control_character(parts, cli, fake_gguf, tmp_path):
    text = "".join(parts)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"query": "q" + text, "documents": ["plain", "x" + text]}) + "\n", encoding="utf-8")
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(docs))
    assert code == 0, err
    for line in out.splitlines():
        assert not any(c in line for c in "\x1b\x07\x9b\r\x08\u202e\u2066\u200f\u2028\u2029"), line
        assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in line), repr(line)


@CLI_PROFILE
@given(secret=SECRETS, ctrl=CONTROL)
def test_error_lines_show_control_characters_escaped(secret, ctrl, cli):
    code, _, err = cli("rerank", "-m", f"/nonexistent/x{ctrl}y.gguf", "-q", "q", stdin="a\n")
    assert code == 2
    (line,) = err.splitlines()
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line


# -- model references --------------------------------------------------------------------------------


@CLI_PROFILE
@given(ref=st.text(alphabet=" \t\n\r\x0b\x0c", max_size=4))
def test_an_empty_model_reference_is_refused_by_name(ref, cli):
    from dear_local.store import resolve

    with pytest.raises(UnknownModelError, match="no model given"):
        resolve(ref)
    code, _, err = cli("rerank", "-m", ref, "-q", "q", stdin="a\n")
    assert code == 2 and "no model given" in err


@PROFILE
@given(name_case=st.sampled_from([str.lower, str.upper, str.title]), quant_case=st.sampled_from([str.lower, str.upper]))
def test_names_and_quants_match_whatever_their_case(name_case, quant_case, temp_home):
    from dear_local.store import get_manifest, resolve

    m = get_manifest("smollm2-135m-instruct")
    for quant in m.known_quants():
        path = m.gguf_path(quant)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF")
        got = resolve(f"{name_case(m.name)}:{quant_case(quant)}")
        assert (got.manifest.name, got.quant, got.path) == (m.name, quant, path)


def test_a_directory_is_not_a_model_file(tmp_path):
    from dear_local.store import resolve

    with pytest.raises(ModelNotFoundError, match="is a directory"):
        resolve(str(tmp_path))


def test_a_gguf_passed_by_path_gets_the_profile_of_the_manifest_that_records_it(tmp_path, temp_home):
    """A copy of a built quant, by path, is matched by size and sha256 to the build's manifest.json."""
    from dear_local.fileio import sha256_file
    from dear_local.store import get_manifest, resolve

    m = get_manifest("smollm2-135m-instruct")
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + bytes(reversed(range(256))) * 8)  # same size, other bytes
    assert resolve(str(copy)).manifest is None
    m.dir.mkdir(parents=True)
    (m.dir / "manifest.json").write_text(json.dumps({"files": [
        {"file": f"{m.name}-Q8_0.gguf", "type": "Q8_0", "bytes": copy.stat().st_size, "sha256": sha256_file(copy)},
    ]}), encoding="utf-8")
    got = resolve(str(copy))
    assert got.manifest is m and got.quant == "Q8_0" and got.manifest.profile.template == "rankgpt-chat"
    assert resolve(str(other)).manifest is None
    store_file = m.gguf_path("Q6_K")
    store_file.write_bytes(b"GGUF")  # the store's own file, by path: matched without hashing
    assert resolve(str(store_file)).quant == "Q6_K"


# -- llama.cpp load settings -------------------------------------------------------------------------

BAD_INTS = st.integers(max_value=0) | st.integers(min_value=(1 << 20) + 1) | st.sampled_from([True, 1.5, "4"])


@PROFILE
@given(n_ctx=BAD_INTS)
def test_a_bad_context_size_is_refused_by_its_argument_name(n_ctx, tmp_path):
    from dear_local.backends.llama import LlamaCppBackend

    with pytest.raises(UserInputError, match="^n_ctx must be a whole number"):
        LlamaCppBackend(tmp_path / "never-opened.gguf", n_ctx=n_ctx)


@PROFILE
@given(n_threads=st.integers(max_value=0) | st.integers(min_value=1025) | st.sampled_from([False, 2.0]))
def test_a_bad_thread_count_is_refused_by_its_argument_name(n_threads, tmp_path):
    from dear_local.backends.llama import LlamaCppBackend

    with pytest.raises(UserInputError, match="^n_threads must be a whole number"):
        LlamaCppBackend(tmp_path / "never-opened.gguf", n_threads=n_threads)


@pytest.mark.parametrize("flag,value", [("--threads", "0"), ("--threads", "-5"), ("--n-ctx", "-1"),
                                         ("--n-ctx", "0"), ("--gpu-layers", "-2")])
def test_bad_load_flags_are_refused_naming_the_flag(flag, value, cli, fake_gguf):
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", flag, value, stdin="a\n")
    assert code == 2 and flag in err and "corrupt" not in err


# -- answers that do not parse -----------------------------------------------------------------------


_WINDOW = st.tuples(st.sampled_from(["ok", "wrong_format", "repetition", "missing_documents"]),
                    st.integers(0, 20), st.integers(1, 20))


@given(windows=st.lists(_WINDOW, max_size=40))
def test_parse_tally_fails_exactly_from_a_quarter_of_unreadable_windows(windows):
    # A window is unreadable when it has no bracketed id, or when its answer gave fewer than two
    # usable ids (one, for a window of one passage), whatever its status.
    from dear_local.answer_check import ParseTally

    windows = [(status, min(ids, size), size) for status, ids, size in windows]
    tally = ParseTally()
    tally.add(windows)
    bad = sum(status == "wrong_format" or ids < min(2, size) for status, ids, size in windows)
    assert tally.unparsed == bad
    assert tally.failing == (bad > 0 and 4 * bad >= len(windows))


def test_a_run_of_unreadable_answers_warns_and_strict_makes_it_an_error(cli, tmp_path, fake_gguf):
    model = tmp_path / "noanswer-Q4_K_M.gguf"
    model.write_bytes(fake_gguf.read_bytes())
    code, out, err = cli("rerank", "-m", str(model), "-q", "q", "--format", "trec", stdin="a\nb\nc\n")
    assert code == 0 and len(out.splitlines()) == 3
    assert "warning: 1 of 1 windows (100%) gave no ranking" in err and "--template" in err
    out_file = tmp_path / "run.trec"
    code, out, err = cli("rerank", "-m", str(model), "-q", "q", "--format", "trec", "--strict",
                         "--out", str(out_file), stdin="a\nb\nc\n")
    assert code == 1 and "\nerror: query q0: 1 of 1 windows" in err and not out_file.exists()
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--strict", stdin="a\nb\nc\n")
    assert code == 0 and "warning" not in err


def test_a_served_request_whose_answer_does_not_parse_says_so_in_meta_warnings():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from fake_backend import FakeBackend, no_answer

    from dear_local import Profile, Reranker
    from dear_local.server import ServerSettings, create_app

    def client(script):
        reranker = Reranker("fake", profile=Profile(template="rankgpt-chat"), backend=FakeBackend(script=script))
        return TestClient(create_app(ServerSettings(model="fake.gguf", timeout=30.0), reranker=reranker))

    body = {"query": "q", "documents": ["a", "b", "c"]}
    with client(no_answer) as c:
        meta = c.post("/v1/rerank", json=body).json()["meta"]
    assert meta["parse_status"] == ["wrong_format"]
    (warning,) = meta["warnings"]
    assert "1 of 1 windows (100%) gave no ranking" in warning and "dear-local serve" in warning
    with client(None) as c:
        assert c.post("/v1/rerank", json=body).json()["meta"]["warnings"] == []


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_a_cut_short_gguf_is_reported_as_damaged_before_llama_cpp_opens_it(keep, llama3_vocab_gguf, tmp_path, cli):
    from dear_local.backends.llama import LlamaCppBackend
    from dear_local.errors import InvalidModelFileError

    data = llama3_vocab_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InvalidModelFileError, match="cut.gguf"):
        LlamaCppBackend(cut)
    code, _, err = cli("rerank", "-m", str(cut), "-q", "q", stdin="a\n")
    assert code == 2 and err.startswith("error: model file") and "cpu-buffers" not in err


@CLI_PROFILE
@given(before=st.text(max_size=8), after=st.text(max_size=8))
def test_a_nul_byte_anywhere_in_a_path_is_one_line_naming_it(before, after, cli, tmp_path, fake_gguf):
    """os calls refuse a path holding a NUL byte with a bare ValueError: every path a user gives names it instead."""
    from dear_local import Reranker
    from dear_local.errors import UserInputError

    bad = f"{tmp_path}/{before}\x00{after}.gguf"
    with pytest.raises(UserInputError, match="NUL byte"):
        Reranker(bad)
    code, _, err = cli("rerank", "-m", bad, "-q", "q", stdin="a\n")
    assert code == 2 and "NUL byte" in err and len(err.splitlines()) == 1, err
    # an option of path type is checked by click first: its usage error names the option
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--out", bad, stdin="a\n")
    assert code == 2 and "'--out'" in err and "null byte" in err and "Traceback" not in err, err


USAGE_COMMANDS = ["rerank", "serve", "check", "evaluate", "models", "env", "pull", "templates", "convert", "quantize"]


@CLI_PROFILE
@given(command=st.sampled_from(USAGE_COMMANDS + ["bogus-command"]),
       flag=st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=10),
       value=st.text(max_size=12) | CONTROL)
def test_every_usage_error_is_one_line_naming_the_help(cli, command, flag, value):
    """An unknown command or option, or an option with a malformed value, is one line (user text escaped) that names the --help to read."""
    assume(not flag.startswith("-") and flag not in ("help",))
    args = [command, f"--x-{flag}", value] if command != "bogus-command" else [command]
    code, out, err = cli(*args)
    assert code == 2, (args, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "--help')" in err, err
    assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in err), err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("args", [["rerank", "-m", "x.gguf", "-q", "q", "--threads", "many"],
                                  ["rerank", "-m"], ["serve", "--model", "x.gguf", "--port"], ["check", "--out"],
                                  ["serve", "--model", "x.gguf", "--port", "-1"],
                                  ["rerank", "-m", "x.gguf", "-q", "q", "--cpu-buffers", "huge"],
                                  ["evaluate"]])
def test_malformed_and_missing_values_are_one_line_too(cli, args):
    code, out, err = cli(*args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert f"(see 'dear-local {args[0]} --help')" in err, err


def test_a_huge_value_in_a_usage_error_is_cut_short(cli):
    code, _, err = cli("rerank", "-m", "x.gguf", "-q", "q", "--format", "x" * 100_000)
    assert code == 2 and err.count("\n") == 1 and len(err) < 600 and "\u2026" in err, err[:200]


@pytest.mark.parametrize("option", ["-m", "--docs"])
def test_a_path_too_long_for_the_file_system_is_one_line(cli, option):
    args = ["rerank", "-m", "x" * 3000, "-q", "q"] if option == "-m" else ["rerank", "-m", "x.gguf", "-q", "q",
                                                                         "--docs", "y" * 3000]
    code, out, err = cli(*args)
    assert code == 2 and out == "" and err.count("\n") == 1 and "unexpected" not in err, err[:300]


def test_a_closed_standard_input_reads_as_empty():
    """Started with stdin closed (`<&-`), commands that read it say there is nothing, in one line."""
    import subprocess
    import sys as _sys

    proc = subprocess.run([_sys.executable, "-c", "import os, sys; os.close(0); sys.stdin = None; "
                           "sys.argv = ['dear-local', 'rerank', '-m', 'x.gguf', '-q', 'q']; "
                           "from dear_local.cli import main; main()"], capture_output=True, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and "unexpected" not in err, err
