"""Hostile input against `dear-local serve`: the scripted fake backend, real HTTP on 127.0.0.1 (fast tier).

- API keys: any Unicode text is either refused at start-up with one line that does not show it,
  or authenticates when a client sends its UTF-8 bytes; a wrong key still gets 401.
- Bodies are read as JSON whatever their Content-Type; anything that is not a valid request gets a
  4xx JSON error, never a 5xx, on every rerank path and in every shape (Cohere, Jina, Infinity, TEI);
  schemathesis checks the same from the OpenAPI schema.
- A port in use: one line naming --port, exit 2, and nothing printed before it claims to serve.
- Secrets: the key never reaches the banner, the access log or the error log; --server credentials
  are masked wherever a URL is shown.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dear_local import Profile, Reranker  # noqa: E402
from dear_local.errors import ServerError, UserInputError  # noqa: E402
from dear_local.run_options import RunOptions  # noqa: E402
from dear_local.server import ServerSettings, create_app  # noqa: E402
from dear_local.server.runner import background  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402

TESTS = Path(__file__).resolve().parent
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel Tower is in Paris.", "Cats sleep."]
BODY = {"query": "capital", "documents": DOCS}
MAX_BODY = 4096


def _reranker(backend=None) -> Reranker:
    profile = Profile(template="rankgpt-chat", decoding="greedy")
    return Reranker("fake", profile=profile, backend=backend or FakeBackend())


@contextmanager
def serving(api_key: str | None = None, backend=None):
    """A real uvicorn on an ephemeral 127.0.0.1 port over the fake model; yields an httpx client."""
    settings_ = ServerSettings(model="fake.gguf", max_queue=4, timeout=30.0, max_documents=6,
                               max_body_bytes=MAX_BODY, api_key=api_key)
    app = create_app(settings_, reranker=_reranker(backend))
    with background(app, settings_) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def bearer(token: bytes) -> dict[str, bytes]:
    return {"Authorization": b"Bearer " + token}


# -- API keys -------------------------------------------------------------------------------------


def carriable(key: str) -> bool:
    """What an HTTP header can carry back unchanged, as config.check_api_key documents it."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return (not any(unicodedata.category(c) == "Cc" for c in key)
            and not key[0].isspace() and not key[-1].isspace())


ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), min_size=1, max_size=20)  # surrogates too
PRINTABLE_CORE = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=20).filter(
    lambda k: not k[0].isspace() and not k[-1].isspace())


# each example starts a server: 6 drawn keys beside the 10 fixed ones below
@settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(key=st.one_of(ANY_TEXT, PRINTABLE_CORE))
@example("ключ")
@example("х")  # its UTF-8 ends in 0x85, which latin-1 text calls a whitespace (NEL)
@example("ключ\u00a0x")
@example("🔑 a key with spaces")
@example(" key")
@example("key\n")
@example("k\te\ty")
@example("\x85key")
@example("key\u3000")
@example("\ud800secret")
def test_every_api_key_is_refused_at_start_up_or_authenticates_over_http(key):
    try:
        ServerSettings(model="fake.gguf", api_key=key)
    except UserInputError as exc:
        message = str(exc)
        assert "--api-key" in message and "DEAR_LOCAL_API_KEY" in message and "\n" not in message
        if len(key) >= 8:
            assert key not in message
        assert not carriable(key), "a key a client could send was refused"
        return
    assert carriable(key), "a key no client can send was accepted"
    raw = key.encode("utf-8")
    with serving(api_key=key) as c:
        ok = c.post("/v1/rerank", json=BODY, headers=bearer(raw))
        assert ok.status_code == 200, ok.text
        assert [r["index"] for r in ok.json()["results"]] == [3, 2, 1, 0]
        assert c.get("/v1/models", headers={"Authorization": b"bearer   " + raw}).status_code == 200
        wrong = [raw + b"x", raw[:-1], b"x" + raw]
        if not key.isascii():
            wrong.append(key.encode("utf-8").decode("latin-1").encode("utf-8"))  # read as latin-1, sent as UTF-8
        for token in [t for t in wrong if t and t.strip(b" \t") == t]:  # what a client can send
            r = c.post("/v1/rerank", json=BODY, headers=bearer(token))
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", (token, r.text)
        assert c.post("/v1/rerank", json=BODY).status_code == 401


def test_a_refused_key_is_never_shown(cli, fake_gguf, monkeypatch):
    monkeypatch.setenv("DEAR_LOCAL_API_KEY", "sekrit-value\twith-a-tab")
    code, out, err = cli("serve", "-m", str(fake_gguf), "--port", "0")
    assert code == 2 and "sekrit" not in out + err
    assert err.strip().startswith("error: the API key (--api-key or DEAR_LOCAL_API_KEY) holds a control character")
    assert len(err.strip().splitlines()) == 1


def test_wrong_schemes_and_repeated_headers_get_401_and_no_key_accepts_anything():
    with serving(api_key="s3cret-key") as c:
        for headers in ([("Authorization", "Basic czNjcmV0")], [("Authorization", "s3cret-key")],
                        [("Authorization", "Bearer s3cret-key"), ("Authorization", "Bearer s3cret-key")],
                        [("Authorization", "Bearer")]):
            r = c.post("/v1/rerank", json=BODY, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
        assert raw_status(c, b"Authorization: Bearer \r\n") == 401  # an empty token, as curl can send it
        assert c.get("/health").status_code == 200
    with serving() as c:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": b"Bearer \xd0\xba"},
                        {"Authorization": "Basic eDp5"}):
            assert c.post("/v2/rerank", json=BODY, headers=headers).status_code == 200, headers
        assert raw_status(c, b"Authorization: Bearer \r\n") == 200


def raw_status(client: httpx.Client, header: bytes) -> int:
    """POST BODY to /v1/rerank over a plain socket with ``header`` (bytes httpx would refuse); the status."""
    body = json.dumps(BODY).encode()
    request = (b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
               + header + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection((client.base_url.host, client.base_url.port), timeout=30) as s:
        s.sendall(request)
        status_line = s.makefile("rb").readline()
    return int(status_line.split()[1])


# -- bodies and content types ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    with serving() as c:
        yield c


SLOPPY_TYPES = [
    None, "", "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz", "application/octet-stream", "application/json",
    "application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json", "text/html;charset=latin-1",
    "application/xml", "*/*", "json", ";;;", "application/json, text/plain",
]
CONTENT_TYPES = st.one_of(st.sampled_from(SLOPPY_TYPES),
                          st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip))


@st.composite
def valid_bodies(draw) -> bytes:
    docs = draw(st.lists(st.sampled_from(DOCS), min_size=1, max_size=6))
    body = {"query": draw(st.sampled_from(["capital", "ville lumière", "🐈 sleep", "q"])), "documents": docs}
    if draw(st.booleans()):
        body["top_n"] = draw(st.integers(1, len(docs)))
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
WRONG_FIELD = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.just(""),
                        st.just("  \n"), st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))


@st.composite
def valid_tei_bodies(draw) -> bytes:
    texts = draw(st.lists(st.sampled_from(DOCS), min_size=1, max_size=6))
    body = {"query": draw(st.sampled_from(["capital", "ville lumière", "🐈 sleep", "q"])), "texts": texts}
    for flag in ("return_text", "raw_scores", "truncate"):
        if draw(st.booleans()):
            body[flag] = draw(st.sampled_from([True, False, "true", "False", "TRUE"]))
    if draw(st.booleans()):
        body["truncation_direction"] = draw(st.sampled_from(["Left", "Right", "left", "right"]))
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8")


SHAPES = ("documents", "texts")


@st.composite
def invalid_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["wrong_types", "surrogate", "oversized", "not_json", "not_utf8", "deep", "form",
                                 "wrong_flags"]))
    field = draw(st.sampled_from(SHAPES))  # the Cohere/Jina/Infinity shape, or TEI's
    if kind == "wrong_types":
        documents = draw(st.one_of(WRONG_FIELD, st.lists(WRONG_FIELD, max_size=3)))
        body = {"query": draw(WRONG_FIELD), field: documents}
        return json.dumps(body).encode()
    if kind == "wrong_flags":
        flags = ["return_documents"] if field == "documents" else ["return_text", "raw_scores", "truncate"]
        value = draw(st.one_of(st.integers(), st.just("yes"), st.just(""), st.lists(st.booleans(), max_size=2)))
        return json.dumps({"query": "q", field: ["a"], draw(st.sampled_from(flags)): value}).encode()
    if kind == "surrogate":
        code = draw(st.integers(0xD800, 0xDFFF))
        where = draw(st.sampled_from(['{"query": "%s", "documents": ["a"]}', '{"query": "q", "documents": ["%s"]}',
                                      '{"query": "q", "documents": [{"text": "%s"}]}', '{"query": "%s", "texts": ["a"]}',
                                      '{"query": "q", "texts": ["%s"]}',
                                      '{"query": "q", "documents": [{"content": [{"type": "text", "text": "%s"}]}]}']))
        return (where % f"\\u{code:04x}").encode()
    if kind == "oversized":
        size = draw(st.integers(MAX_BODY, 5 * MAX_BODY))
        return json.dumps({"query": "q", field: ["x" * size]}).encode()
    if kind == "not_json":
        raw = draw(st.binary(min_size=1, max_size=200))
        try:
            json.loads(raw)
        except ValueError:
            return raw
        return b"{" + raw
    if kind == "not_utf8":
        return b'{"query": "caf\xe9", "documents": ["a"]}'
    if kind == "deep":
        depth = draw(st.integers(500, 2000))
        return b'{"query": "q", "documents": ' + b"[" * depth + b"]" * depth + b"}"
    return b"query=capital&documents=Paris&documents=Bananas"


def post(client, path: str, content: bytes, content_type: str | None) -> httpx.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return client.post(path, content=content, headers=headers)


def assert_json_error(r: httpx.Response) -> dict:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] and body["message"] and "\n" not in body["message"]
    return body


RERANK_PATHS = ["/v1/rerank", "/v2/rerank", "/rerank"]
TEI_PATHS = ["/v1/rerank", "/rerank"]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(content_type=CONTENT_TYPES, body=valid_bodies(), path=st.sampled_from(RERANK_PATHS))
def test_a_valid_request_is_ranked_whatever_its_content_type(client, content_type, body, path):
    r = post(client, path, body, content_type)
    assert r.status_code == 200, (content_type, r.text)
    sent = json.loads(body)
    n = len(sent["documents"])
    assert [x["index"] for x in r.json()["results"]] == list(range(n))[::-1][: sent.get("top_n", n)]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(content_type=CONTENT_TYPES, body=valid_tei_bodies(), path=st.sampled_from(TEI_PATHS))
def test_a_valid_tei_request_is_ranked_whatever_its_content_type(client, content_type, body, path):
    r = post(client, path, body, content_type)
    assert r.status_code == 200, (content_type, r.text)
    n = len(json.loads(body)["texts"])
    assert [x["index"] for x in r.json()] == list(range(n))[::-1]


# Every text a request carries, in each shape: the field, and how to put a value into a body. (TEI's shape
# has no model field: a `model` there is an unknown field, ignored as any other.)
TEXT_FIELDS = {
    "model": lambda v, docs: {"model": v, "query": "q", "documents": docs},
    "query": lambda v, docs: {"query": v, "documents": docs},
    "documents": lambda v, docs: {"query": "q", "documents": [*docs, v]},
    "documents.text": lambda v, docs: {"query": "q", "documents": [*docs, {"text": v}]},
    "documents.content": lambda v, docs: {"query": "q", "documents": [*docs, {"content": [{"type": "text", "text": v}]}]},
    "tei.query": lambda v, docs: {"query": v, "texts": docs},
    "tei.texts": lambda v, docs: {"query": "q", "texts": [*docs, v]},
}
LONE_SURROGATE_TEXT = st.builds(lambda a, s, b: a + s + b, st.text(max_size=5),
                                st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), st.text(max_size=5))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(sorted(TEXT_FIELDS)), value=LONE_SURROGATE_TEXT, path=st.sampled_from(RERANK_PATHS))
def test_a_lone_surrogate_in_any_text_field_is_a_422_never_a_5xx(client, field, value, path):
    """Lone surrogates are valid JSON escapes but not text: whichever field holds one (``model`` too, which
    the Infinity shape echoes back), the answer is a 422, never a 500 from serialising it."""
    if field.startswith("tei.") and path == "/v2/rerank":
        path = "/rerank"
    body = json.dumps(TEXT_FIELDS[field](value, ["a", "b"])).encode()
    r = post(client, path, body, "application/json")
    assert r.status_code == 422, (field, path, r.text)
    assert field.removeprefix("tei.").split(".")[0] in r.json()["message"], r.text  # the field is named


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(content_type=CONTENT_TYPES, body=st.one_of(invalid_bodies(), JSON_VALUES.map(lambda v: json.dumps(v).encode())),
       path=st.sampled_from(RERANK_PATHS))
def test_any_other_body_gets_a_4xx_json_error_never_a_5xx(client, content_type, body, path):
    assert_json_error(post(client, path, body, content_type))


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_body_that_is_not_json_names_the_content_type_to_send(client, content_type):
    err = assert_json_error(post(client, "/v1/rerank", b"query=capital&documents=Paris", content_type))
    assert err["error"] == "invalid_json" and "Content-Type: application/json" in err["message"]
    err = assert_json_error(post(client, "/v1/rerank", b'"just a string"', content_type))
    assert err["error"] == "invalid_request" and "JSON object" in err["message"]


def test_curl_style_form_posts_of_json_are_ranked(client):
    """``curl -d '{...}'`` sends JSON labelled as a form."""
    r = post(client, "/v2/rerank", json.dumps(BODY).encode(), "application/x-www-form-urlencoded")
    assert r.status_code == 200 and [x["index"] for x in r.json()["results"]] == [3, 2, 1, 0]


def test_schemathesis_finds_no_server_errors_on_any_route():
    """Schema-driven requests, valid and invalid, to every endpoint of the schema (the TEI and Infinity
    ones included) over the fake model: none may get a 5xx. test_server.py runs the same on the stand-in."""
    pytest.importorskip("schemathesis")
    from schema_fuzz import fuzz_every_operation

    settings_ = ServerSettings(model="fake.gguf", max_queue=8, timeout=30.0, max_documents=3, max_body_bytes=MAX_BODY)
    app = create_app(settings_, reranker=_reranker())
    with background(app, settings_) as url:
        statuses, failures = fuzz_every_operation(url, positive=12, negative=20, timeout=30)
    assert not failures
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):  # valid and invalid requests reached each
        assert statuses.get((path, 200)) and statuses.get((path, 422)), statuses
    assert statuses.get(("/info", 200)), statuses
    print("schemathesis statuses:", statuses)


# -- the port and the process ----------------------------------------------------------------------

SERVE_WITH_FAKE_MODEL = (
    "import sys\n"
    "from dear_local.backends import factory\n"
    "from fake_backend import fake_open_backend\n"
    "factory.open_backend = fake_open_backend()\n"
    "from dear_local.cli import main\n"
    "sys.argv = ['dear-local', 'serve', *sys.argv[1:]]\n"
    "main()\n"
)


def serve_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``dear-local serve ARGS`` in a child process whose GGUF loads as the fake model."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DEAR_LOCAL_API_KEY", "DEAR_LOCAL_DEBUG")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.Popen([sys.executable, "-c", SERVE_WITH_FAKE_MODEL, *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def busy_port():
    """A port on 127.0.0.1 that another socket is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("host, shown", [("127.0.0.1", "127.0.0.1"), ("localhost", "localhost"),
                                          ("0.0.0.0", "0.0.0.0")])
def test_a_port_in_use_is_one_line_naming_port_and_nothing_claims_to_serve(fake_gguf, busy_port, host, shown):
    proc = serve_process("-m", str(fake_gguf), "--host", host, "--port", str(busy_port))
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, err.decode()
    assert err.decode().splitlines() == [f"error: port {busy_port} on {shown} is in use; pick another with --port"]
    assert out == b""


@pytest.mark.parametrize("host, needle", [("no-such-host.invalid", "--host"), ("192.0.2.1", "--host")])
def test_a_host_that_cannot_be_bound_is_one_line_naming_host(cli, fake_gguf, host, needle):
    code, _, err = cli("serve", "-m", str(fake_gguf), "--host", host, "--port", "0")
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "serving" not in err


def _read_banner(proc: subprocess.Popen, lines: list[str]) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        assert line or proc.poll() is None, "".join(lines)
        lines.append(line)
        m = re.search(r"^serving .* on http://127\.0\.0\.1:(\d+)", line)
        if m:
            return int(m.group(1))
    raise AssertionError("no banner: " + "".join(lines))


def test_the_key_never_reaches_the_banner_or_the_logs(fake_gguf):
    key = "sekrit-Ключ-12345"
    proc = serve_process("-m", str(fake_gguf), "--port", "0", "--log-level", "trace",
                         env={"DEAR_LOCAL_API_KEY": key})
    lines: list[str] = []
    try:
        port = _read_banner(proc, lines)
        assert "key required" in lines[-1]
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if c.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.1)
            auth = bearer(key.encode())
            assert c.post("/v1/rerank", json=BODY, headers=auth).status_code == 200
            assert c.post("/v1/rerank", json=BODY, headers=bearer(key.encode() + b"!")).status_code == 401
            assert c.get("/v1/models", params={"api_key": key, "token": key}).status_code == 401
            assert c.post("/v2/rerank", params={"q": key}, json=BODY, headers=auth).status_code == 200
            assert c.get(f"/no/such/{key}").status_code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    everything = "".join(lines) + err.decode() + out.decode()
    assert proc.returncode == 0, everything
    for spelling in (key, quote(key), quote(key, safe=""), repr(key.encode())[2:-1], "Ключ"):
        assert spelling not in everything, everything
    assert "api_key=***" in everything and "token=***" in everything  # the access log ran, masked
    assert "Traceback" not in everything


def test_server_credentials_are_masked_in_the_banner_and_in_errors(cli, fake_gguf):
    from dear_local.cli.serve import banner

    settings_ = ServerSettings(model="fake.gguf", api_key="the-api-key",
                               run=RunOptions(servers=("http://admin:hunter2@127.0.0.1:9", "http://tok3n@10.0.0.1:8")))
    line = banner(settings_, Profile(template="rankgpt-chat"), 8080)
    assert "http://admin:***@127.0.0.1:9" in line and "http://***@10.0.0.1:8" in line
    assert "hunter2" not in line and "tok3n" not in line and "the-api-key" not in line
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, not listening: connections are refused
        code, out, err = cli("serve", "-m", str(fake_gguf), "--port", "0", "--server",
                             f"http://admin:hunter2@127.0.0.1:{dead}")
    assert code != 0 and "hunter2" not in out + err and "admin:***@" in err


class FailingServers(FakeBackend):
    """The fake model, but the inference servers behind it fail mid-request (with their URL in the error)."""

    def prefill(self, ids):
        raise ServerError("http://admin:hunter2@10.9.9.9:8080/completion does not answer: connection refused")


def test_a_server_failure_is_logged_with_its_credentials_masked(caplog):
    with caplog.at_level(logging.WARNING, logger="dear_local.server"), serving(backend=FailingServers()) as c:
        r = c.post("/v1/rerank", json=BODY)
    assert r.status_code == 503 and "hunter2" not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "admin:***@10.9.9.9" in logged and "hunter2" not in logged


NOT_TEXT = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                     st.lists(st.text(max_size=2), max_size=2),
                     st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(value=NOT_TEXT, wrapped=st.booleans(), at=st.integers(0, 2))
def test_a_document_that_is_not_text_is_refused_naming_what_it_is(client, value, wrapped, at):
    """The v1 shape's documents as the --jsonl documents shape refuses them: by position, and what was sent."""
    docs = ["a", "b", "c"]
    docs[at] = {"text": value} if wrapped else value
    if not wrapped and isinstance(value, dict):  # an object without "text"
        expected = 'needs a "text" field' if "text" not in value else "must be a string"
    elif wrapped:
        expected = '"text" must be a string, not '
    else:
        expected = "a document must be a string or an object"
    err = assert_json_error(client.post("/v1/rerank", json={"query": "q", "documents": docs}))
    assert f"documents.{at}" in err["message"] and expected in err["message"], err
