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


def test_without_the_workstation_package_its_commands_are_absent_and_name_the_extra():
    without = "import sys\nsys.modules['dear_local_convert'] = None\nfrom dear_local.cli import main\n"
    proc = _run(without + "from typer.main import get_command\nfrom dear_local.cli import app\n"
                "print(' '.join(n for n, c in get_command(app).commands.items() if not c.hidden))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["rerank", "templates", "models", "pull", "env", "evaluate", "serve"]
    for argv, extra in ((["convert", ".", "--out", "x"], "convert"), (["convert-lora", "--help"], "convert"),
                        (["check", "-r", "ref.jsonl"], "check"), (["imatrix"], "convert")):
        proc = _run(without + f"sys.argv = ['dear-local', *{argv!r}]\nmain()")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == (f"error: 'dear-local {argv[0]}' needs the '{extra}' extra (the workstation package "
                               f'dear_local_convert is not installed): pip install "dear-local[{extra}]"\n')
    proc = _run(without + "sys.argv = ['dear-local', 'templates']\nmain()")
    assert proc.returncode == 0 and "card" in proc.stdout, proc.stderr


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
    assert "dear_local/templates/pointwise/dear-p.toml" in names
    assert "dear_local_convert/agreement/check.py" in names
    assert not any(n.startswith("convert/") for n in names), "the workstation package must not install as 'convert'"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    declared = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[dear_local.commands]" in declared
    assert "convert = dear_local_convert.cli.convert:register" in declared
