"""Commands reach ``dear-local`` through the ``dear_local.commands`` entry points.

The workstation commands come from ``dear_local_convert`` this way; any installed distribution can
add its own; from a source checkout, the checkout's ``pyproject.toml`` declares dear-local's
registrars, whatever the installed metadata says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dear_local.cli import app, plugins

ROOT = Path(__file__).resolve().parents[1]


def _distribution(where: Path, name: str, entry_points: str, modules: dict[str, str]) -> Path:
    """An installed distribution as pip leaves one: modules, and a dist-info with its entry points."""
    info = where / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    for module, source in modules.items():
        (where / f"{module}.py").write_text(source, encoding="utf-8")
    return where


HELLO = '''import typer


def hello(name: str = typer.Argument("world")) -> None:
    """Say hello."""
    typer.echo(f"hello {name}")


def register(app: typer.Typer) -> None:
    app.command()(hello)
'''


def test_the_checkout_declares_a_registrar_for_every_workstation_command():
    declared = plugins.declared_registrars(ROOT / "pyproject.toml")
    assert [ep.value.split(":")[0] for ep in declared] == [
        "dear_local_convert.cli.convert", "dear_local_convert.cli.agreement", "dear_local_convert.cli.imatrix"]
    demo = typer.Typer()
    for ep in declared:
        ep.load()(demo)
    assert plugins.command_names(demo) == set(plugins.WORKSTATION_COMMANDS)


def test_the_cli_has_the_workstation_commands_themselves_not_stand_ins():
    callbacks = {plugins.command_name(info): info for info in app.registered_commands}
    for name in plugins.WORKSTATION_COMMANDS:
        assert callbacks[name].callback.__module__.startswith("dear_local_convert.cli."), name
        assert not callbacks[name].hidden


def test_another_distribution_adds_a_command(tmp_path, monkeypatch):
    where = _distribution(tmp_path, "dear-local-hello", "[dear_local.commands]\nhello = hello_plugin:register\n",
                          {"hello_plugin": HELLO})
    monkeypatch.syspath_prepend(str(where))
    demo = typer.Typer()
    assert plugins.register_plugins(demo) == []
    assert "hello" in plugins.command_names(demo) and "convert" in plugins.command_names(demo)
    result = CliRunner().invoke(demo, ["hello", "there"])
    assert result.exit_code == 0 and result.output == "hello there\n"


def test_dear_local_runs_a_command_another_distribution_adds(tmp_path):
    where = _distribution(tmp_path, "dear-local-hello", "[dear_local.commands]\nhello = hello_plugin:register\n",
                          {"hello_plugin": HELLO})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), *sys.path])}
    proc = subprocess.run([sys.executable, "-m", "dear_local", "hello", "plugin"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello plugin\n"


def test_a_checkout_replaces_the_installed_dear_local_metadata(tmp_path, monkeypatch):
    # metadata written by an install of another revision, naming a registrar this tree does not have
    stale = _distribution(tmp_path, "dear-local", "[dear_local.commands]\nold = dear_local_gone.cli:register\n", {})
    monkeypatch.syspath_prepend(str(stale))
    values = [ep.value for ep in plugins.registrars()]
    assert "dear_local_gone.cli:register" not in values
    assert values[:3] == [ep.value for ep in plugins.declared_registrars(ROOT / "pyproject.toml")]


def test_an_installed_wheel_reads_the_installed_metadata(tmp_path, monkeypatch):
    stale = _distribution(tmp_path, "dear-local", "[dear_local.commands]\nold = dear_local_gone.cli:register\n", {})
    monkeypatch.syspath_prepend(str(stale))
    monkeypatch.setattr(plugins, "checkout_pyproject", lambda: None)
    assert [ep.value for ep in plugins.registrars()] == ["dear_local_gone.cli:register"]
    demo = typer.Typer()
    assert plugins.register_plugins(demo) == ["old"]  # its package is not installed: skipped
    hidden = {plugins.command_name(info) for info in demo.registered_commands if info.hidden}
    assert hidden == set(plugins.WORKSTATION_COMMANDS)


@pytest.mark.parametrize("text", ['[project]\nname = "other"\n', "not = [toml", ""])
def test_a_pyproject_of_another_project_declares_nothing(tmp_path, text):
    path = tmp_path / "pyproject.toml"
    path.write_text(text, encoding="utf-8")
    assert plugins.declared_registrars(path) is None


def test_a_registrar_missing_a_dependency_fails_loudly(tmp_path, monkeypatch):
    where = _distribution(tmp_path, "dear-local-broken", "[dear_local.commands]\nbroken = broken_plugin:register\n",
                          {"broken_plugin": "import no_such_dependency_xyz\n"})
    monkeypatch.syspath_prepend(str(where))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        plugins.register_plugins(typer.Typer())
