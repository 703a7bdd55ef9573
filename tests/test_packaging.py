"""The runtime installs and imports without the heavy extras."""

from __future__ import annotations

import subprocess
import sys

BLOCK = "import sys\nfor m in ('torch', 'transformers', 'gguf', 'safetensors', 'peft', 'fastapi', 'uvicorn'):\n    sys.modules[m] = None\n"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120)


def test_the_runtime_imports_without_torch_transformers_or_fastapi():
    proc = _run(
        "import dear_local, dear_local.cli, dear_local.decoding, dear_local.backends.llama, dear_local_convert.agreement.check\n"
        "from dear_local import Reranker, Profile\n"
        "print('ok')"
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_a_missing_extra_names_the_pip_command():
    proc = _run("import sys\nsys.argv = ['dear-local', 'convert', '.', '--out', 'x']\nfrom dear_local.cli import main\nmain()")
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "dear-local[convert]"' in proc.stderr
    proc = _run("import sys\nsys.argv = ['dear-local', 'serve', '--model', 'x.gguf']\nfrom dear_local.cli import main\nmain()")
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "dear-local[serve]"' in proc.stderr


def test_manifests_ship_inside_the_wheel(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0 and "hatchling" in proc.stderr:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), "."],
            capture_output=True, text=True, timeout=300,
        )
    assert proc.returncode == 0, proc.stderr
    import zipfile

    (wheel,) = tmp_path.glob("dear_local-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dear_local/_models/dear-8b-listwise.toml" in names
    assert "dear_local/_models/smollm2-135m-instruct.toml" in names
    assert "dear_local/_models/dear-8b-listwise-lora.toml" in names
    assert "dear_local/templates/card.toml" in names
    assert "dear_local_convert/agreement/check.py" in names
    assert not any(n.startswith("convert/") for n in names), "the workstation package must not install as 'convert'"
