"""Secrets never printed, control characters never reaching a terminal (issue 22, second hunt).

The classes:

- a URL's password runs to the URL's last ``@`` (it may hold ``@``, ``/``, ``?``, ``#``, ``:`` and
  spaces): the redaction masks all of it, and the fleet sends all of it as basic auth; a URL that
  cannot be used is one ``ServerError`` naming --server that shows no part of the password;
- a server that echoes the credentials it got (decoded password, ``Basic`` form, API key, ``Bearer``
  form) has them masked in every message built from its reply (a real fake server on 127.0.0.1);
- secret-like names (BEARER, CREDS, PASSPHRASE, SIG, SIGNATURE, CREDENTIAL ...) in settings and in a
  URL's query or fragment, and ``Authorization:``/``Bearer``/``Basic`` values inside any text;
- serve's logs mask a key in any percent-encoding (either hex case, any mix) and escape control
  characters in every record;
- ``env``, ``models`` and JSON output lines carry no character a terminal acts on;
- standard output full or closed: one line, or a quiet exit 141.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import string
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dear_local import redact as redact_module
from dear_local.errors import ServerError
from dear_local.formats.results import json_line
from dear_local.redact import MASK, redact, redact_settings, redact_url
from dear_local.remote.fleet import Fleet, Server, _split_credentials
from dear_local.server.logs import RedactSecrets, install
from dear_local.terminal import UNSAFE
from json_http import JsonHandler, start_server, stop_server

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _forget_registered_secrets():
    """Servers register their secrets for the whole process; keep one test's out of the next."""
    before = set(redact_module._REGISTERED)
    yield
    redact_module._REGISTERED.clear()
    redact_module._REGISTERED.update(before)


# Passwords of every shape a user may type: the URL's delimiters and spaces included. "PW" marks them,
# so a test can tell the password (or any piece of it) from the rest of a message.
PASSWORD_CHARS = st.sampled_from(list(string.ascii_letters + string.digits + "@/?#: !$&'()*+,;=-._~%\"\\") + ["é", "ключ"])
PASSWORDS = st.lists(PASSWORD_CHARS, min_size=1, max_size=12).map(lambda cs: "PW" + "".join(cs))
USERS = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8)
SCHEMES = st.sampled_from(["http", "https"])


def _pieces(secret: str, size: int = 4) -> set[str]:
    """Every piece of ``secret`` of ``size`` characters that starts with its "PW" mark or holds a letter
    run of it: what a partial mask would leave showing."""
    return {secret[i:i + size] for i in range(len(secret) - size + 1) if secret[i:i + size].startswith("PW")}


# -- F1: the whole password, to the URL's last "@" ---------------------------------------------------


@PROPERTY
@given(scheme=SCHEMES, user=USERS, password=PASSWORDS, quoted=st.booleans(), path=st.sampled_from(["", "/v1", "/x?a=1"]))
def test_a_url_password_is_masked_whole_whatever_it_holds(scheme, user, password, quoted, path):
    url = f"{scheme}://{user}:{password}@127.0.0.1:1{path}"
    if not quoted:  # unquoted in a sentence, the rule: at most two runs of spaces, none after , ; or .
        assume(not re.search(r"[,;.]\s|\s+\S+\s+\S+\s+", password))
    text = f"server {url!r} failed" if quoted else f"server {url} failed"
    shown = redact_url(text)
    expected_url = f"{scheme}://{user}:{MASK}@127.0.0.1:1{path}"
    q = text[len("server ")] if quoted else ""  # repr picks the quote
    assert shown == f"server {q}{expected_url}{q} failed"
    # the fleet takes the same password, whole, percent-decoded
    assert _split_credentials(url) == (f"{scheme}://127.0.0.1:1{path}", (user, unquote(password)))


def test_an_address_later_in_a_sentence_is_not_taken_for_a_password():
    for text in ("server http://h:1/x failed, contact a@b.com", "see http://h:1 and then mail the user a@b"):
        assert redact_url(text) == text


@PROPERTY
@given(password=PASSWORDS, host=st.sampled_from(["proxy:3128", "127.0.0.1:18101", "[::1]:8080"]))
def test_a_proxy_url_in_a_setting_shows_no_part_of_its_password(password, host):
    assume("\\" not in password)
    shown = redact_settings({"DEAR_LOCAL_PROXY": f"http://user:{password}@{host}"})["DEAR_LOCAL_PROXY"]
    assert shown == f"http://user:{MASK}@{host}"


# -- F2: a URL that cannot be used is one line, no part of the password ----------------------------------


@PROPERTY
@given(user=USERS, password=PASSWORDS, port=st.sampled_from(["abc", "99999999", "-1", "1x"]))
def test_a_bad_server_url_is_one_line_naming_server_without_the_password(user, password, port):
    with pytest.raises(ServerError) as info:
        Fleet([f"http://{user}:{password}@127.0.0.1:{port}"], timeout=1, retries=0)
    message = str(info.value)
    assert "\n" not in message and "--server" in message and "percent-encode" in message
    for piece in _pieces(password) | {password, unquote(password)}:
        assert piece not in message


def test_a_password_with_slash_hash_or_question_mark_is_taken_whole():
    server = Server("http://admin:pa/s#s?w@127.0.0.1:9", timeout=1)
    assert server.url == "http://127.0.0.1:9" and server._auth == ("admin", "pa/s#s?w")
    assert "pa/s" not in server.label and server.label == f"http://admin:{MASK}@127.0.0.1:9"


# -- F3: a server that echoes the credentials it got ------------------------------------------------------


class _Echo(JsonHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's name
        auth = self.headers.get("Authorization", "")
        decoded = ""
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode("utf-8", "replace")
        self.send_json(401, json.dumps({"error": f"invalid credentials {decoded} header={auth}"}, ensure_ascii=False).encode())


@pytest.fixture(scope="module")
def echo_server():
    server = start_server(_Echo)
    yield f"127.0.0.1:{server.server_address[1]}"
    stop_server(server)


# 4 characters at least: shorter values are masked only where they stand whole (see the F5 test)
SAFE_PASSWORDS = st.text(alphabet=string.ascii_letters + string.digits + "@/ #?:!é", min_size=2, max_size=10).map(
    lambda s: "PW" + s)


@settings(PROPERTY, max_examples=25)
@given(user=USERS, password=SAFE_PASSWORDS, key=st.text(alphabet=string.ascii_letters + string.digits, min_size=1,
                                                           max_size=12).map(lambda s: "KEY" + s),
       encode=st.booleans())
def test_a_server_that_echoes_credentials_gets_none_of_them_printed(user, password, key, encode, echo_server):
    written = quote(password, safe="") if encode else password
    fleet = Fleet([f"http://{user}:{written}@{echo_server}"], timeout=5, retries=0, api_key=key)
    try:
        with pytest.raises(ServerError) as info:
            fleet.request("GET", "/props", probe=True)
    finally:
        fleet.close()
    message = str(info.value)
    assert "HTTP 401" in message and "\n" not in message
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    for secret in {password, written, basic, key, f"Bearer {key}"} | _pieces(password):
        assert secret not in message
    # the CLI prints it through redact() again: still nothing
    from dear_local.cli.messages import safe

    assert password not in safe(message) and key not in safe(message)


# -- F4: secret-like names, headers and parameters in any text ----------------------------------------------

NAME_PARTS = st.sampled_from(["BEARER", "CREDS", "CRED", "PASSPHRASE", "SIG", "SIGNATURE", "CREDENTIAL",
                              "CREDENTIALS", "API_KEY", "TOKEN", "PASSWORD", "SECRET"])
PREFIXES = st.sampled_from(["", "MY_", "UPSTREAM_", "X_"])
VALUES = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=16).map(lambda s: "V" + s)


@PROPERTY
@given(prefix=PREFIXES, part=NAME_PARTS, suffix=st.sampled_from(["", "_VALUE", "S"]), value=VALUES)
def test_a_setting_named_like_a_secret_is_masked(prefix, part, suffix, value):
    name = f"DEAR_LOCAL_{prefix}{part}"
    if part in {"CRED", "TOKEN", "SECRET", "SIG", "SIGNATURE", "PASSPHRASE", "CREDENTIAL", "PASSWORD"} and suffix == "S":
        name += "S"
    shown = redact_settings({name: value})
    assert shown[name] == f"{MASK} (set)"


@PROPERTY
@given(header=st.sampled_from(["Authorization", "authorization", "Proxy-Authorization", "AUTHORIZATION"]),
       sep=st.sampled_from([": ", ":", "=", '": "']),
       scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "Token ", ""]),
       token=st.text(alphabet=string.ascii_letters + string.digits + "-._~+/", min_size=1, max_size=20),
       around=st.sampled_from([("", ""), ("X-Headers ", " and more"), ('{"', '"}')]))
def test_an_authorization_value_is_masked_in_any_text(header, sep, scheme, token, around):
    token = "Z9" + token  # marked, so it cannot be part of a scheme's name
    text = f"{around[0]}{header}{sep}{scheme}{token}{around[1]}"
    shown = redact(text)
    assert token not in shown and MASK in shown


@PROPERTY
@given(scheme=st.sampled_from(["Bearer", "bearer", "BEARER"]),
       token=st.text(alphabet=string.ascii_letters + string.digits + "-._~+/=", min_size=1, max_size=20))
def test_a_bearer_token_of_any_length_is_masked(scheme, token):
    token = "Z9" + token
    assert token not in redact(f"sent {scheme} {token} to the server")


@PROPERTY
@given(user=USERS, password=st.text(alphabet=string.printable.strip(), min_size=1, max_size=12))
def test_basic_credentials_are_masked(user, password):
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert basic not in redact(f"header=Basic {basic}")


def test_prose_about_basic_auth_and_bearer_placeholders_stays_readable():
    assert redact("HTTP basic auth failed") == "HTTP basic auth failed"
    assert redact("send the header 'Authorization: Bearer <key>'") == "send the header 'Authorization: Bearer <key>'"


PARAM_NAMES = st.sampled_from(["sig", "signature", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token",
                               "access_token", "code", "tok", "api_key", "apikey", "password", "client_secret",
                               "api%5Fkey"])


@PROPERTY
@given(name=PARAM_NAMES, value=VALUES, where=st.sampled_from(["?", "?a=1&", "#", "?a=1#", "#x=2&", "?a=1;"]))
def test_secret_named_parameters_are_masked_in_query_and_fragment(name, value, where):
    text = f"https://bucket.example/obj{where}{name}={value}&after=1"
    shown = redact(text)
    assert value not in shown and f"{name}={MASK}" in shown and "after=1" in shown


# -- F5: serve's logs: any percent-encoding, short secrets where they stand whole --------------------------


KEYS = st.text(alphabet=string.ascii_letters + string.digits + "/+= &?#é!", min_size=4, max_size=16)


@PROPERTY
@given(key=KEYS, data=st.data())
def test_the_log_masks_a_key_in_any_percent_encoding(key, data):
    spelled = ""
    for char in key:
        how = data.draw(st.sampled_from(["raw", "upper", "lower"]))
        if how == "raw" and char not in "&?#= ":
            spelled += char
        else:
            hexes = [f"{b:02X}" if how == "upper" else f"{b:02x}" for b in char.encode()]
            spelled += "".join("%" + h for h in hexes)
    redactor = RedactSecrets([key])
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", f"/v1/models?x={spelled}", "1.1", 200), None)
    redactor.filter(record)
    line = record.getMessage()
    assert spelled not in line and key not in line and MASK in line


def test_a_short_key_is_masked_where_it_stands_whole():
    assert redact("Authorization: Bearer ab") == "Authorization: Bearer ***"
    assert redact_url("http://u:ab@h:1") == f"http://u:{MASK}@h:1"
    assert redact_settings({"DEAR_LOCAL_API_KEY": "ab"})["DEAR_LOCAL_API_KEY"] == f"{MASK} (set)"
    assert redact("a cab is a car", ["ab"]) == "a cab is a car"  # but not in free text


# -- F6: the log escapes control characters in every record -------------------------------------------------

CONTROLS = st.characters(codec="utf-8", categories=["Cc"]) | st.sampled_from(
    ["\x1b]0;PWNED\x07", "\x1b[2J", "\x9b31m", "\u202e", "\u2066", "\u2028"])


@PROPERTY
@given(parts=st.lists(st.text(max_size=4) | CONTROLS, min_size=1, max_size=6))
def test_every_log_record_written_has_no_control_character(parts):
    reply = "".join(parts)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("dear_local")
    logger.addHandler(handler)
    try:
        install(["sekrit-key"])
        logging.getLogger("dear_local.server").warning("inference servers failed: %s", f"bad {reply}")
        logging.getLogger("dear_local.server").warning(f"reply in the message: {reply}")
        try:
            raise ValueError(reply)
        except ValueError:
            logging.getLogger("dear_local.server").exception("failed")
    finally:
        logger.removeHandler(handler)
    for line in stream.getvalue().split("\n"):
        assert not UNSAFE.search(line), repr(line)


# -- F7, F8: env and models ------------------------------------------------------------------------------


@PROPERTY
@given(parts=st.lists(st.text(max_size=4) | CONTROLS, min_size=1, max_size=6))
def test_env_shows_every_setting_and_reason_without_control_characters(parts, monkeypatch):
    from dear_local.env_report import collect, format_report

    value = "x" + "".join(parts).replace("\x00", "")  # the environment cannot hold NUL
    monkeypatch.setenv("DEAR_LOCAL_FOO", value)
    monkeypatch.setenv("DEAR_LOCAL_CPU_BUFFERS", value)
    text = format_report(collect())
    for line in text.split("\n"):
        assert not UNSAFE.search(line), repr(line)
    assert "DEAR_LOCAL_FOO" in text


def test_env_json_holds_no_raw_control_character(cli, monkeypatch):
    monkeypatch.setenv("DEAR_LOCAL_FOO", "a\x1b]0;PWNED\x07\x7f\x9b\u202eb")
    code, out, _ = cli("env", "--json")
    assert code == 0
    assert not UNSAFE.search(out.replace("\n", ""))
    assert json.loads(out)["settings"]["DEAR_LOCAL_FOO"] == "a\x1b]0;PWNED\x07\x7f\x9b\u202eb"


def test_models_shows_file_names_and_the_store_path_escaped(cli, monkeypatch, tmp_path):
    from dear_local.store import list_manifests

    home = tmp_path / "home\x1b]0;PWNED\x07"
    monkeypatch.setenv("DEAR_LOCAL_HOME", str(home))
    manifest = list_manifests()[0]
    manifest.dir.mkdir(parents=True, exist_ok=True)
    (manifest.dir / "evil\x1b[2J\u202e.gguf").write_bytes(b"x")
    code, out, err = cli("models")
    assert code == 0, err
    assert not UNSAFE.search(out.replace("\n", ""))
    assert "evil\\x1b[2J\\u202e.gguf" in out and "home\\x1b]0;PWNED\\x07" in out


# -- F9: JSON lines ----------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.text(st.characters(codec="utf-8", categories=["Cc"]) | st.characters(min_codepoint=0x80, max_codepoint=0x20ff)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@PROPERTY
@given(obj=JSON_VALUES)
def test_a_json_line_holds_no_terminal_control_and_reads_back(obj):
    line = json_line(obj)
    assert not UNSAFE.search(line), repr(line)
    assert json.loads(line) == obj


# -- F23: standard output full or closed ---------------------------------------------------------------------


def _run(args: list[str], stdout) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "convert"), os.environ.get("PYTHONPATH", "")])}
    env.pop("DEAR_LOCAL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "dear_local", *args], stdout=stdout, stderr=subprocess.PIPE,
                          env=env, timeout=120, text=True)


@pytest.mark.parametrize("args", [["env"], ["--help"], ["templates"]])
def test_a_full_standard_output_is_one_line(args):
    with open("/dev/full", "w") as full:
        done = _run(args, full)
    from dear_local.errors import DiskFullError

    assert done.returncode == DiskFullError.exit_code
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: standard output"), done.stderr
    assert "is full" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["env"], ["--help"], ["env", "--json"]])
def test_a_closed_pipe_ends_quietly_with_141(args):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        done = _run(args, write)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == "", done.stderr


def test_stdout_errors_on_a_device_does_not_name_an_unrelated_disk():
    code = ("import sys\nfrom dear_local.errors import DiskFullError\nfrom dear_local.fileio import stdout_errors\n"
            "try:\n    with stdout_errors('free some space'):\n        print('x' * 100000, flush=True)\n"
            "except DiskFullError as exc:\n    sys.stderr.write(str(exc))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE, env=env, text=True,
                              timeout=60)
    assert "standard output (/dev/full) is full" in done.stderr, done.stderr
    assert "MiB free" not in done.stderr and "mounted at" not in done.stderr
