"""The README and docs/ stay true to the tree and to the CLI.

- Every relative link points at a file that exists (and, with an anchor, at a heading of that file).
- Every `dear-local` command line in a shell example names a real command and only its real options,
  and each of those commands answers `--help`; the commands that need no model run as written.
- The README stays an entry point: 250 lines at most.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dear_local.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

SHELL_FENCES = {"bash", "sh", "shell", "console"}
# Commands that need no model file and no network: run as the docs write them.
RUNS_WITHOUT_MODEL = {"templates", "models"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- markdown --------------------------------------------------------------------------------------


def _split_fences(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The lines outside fenced code blocks, and each block as (info string, lines)."""
    prose: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    fence = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if match:
                fence = match.group(1)
                blocks.append((match.group(2).lower(), []))
                continue
            prose.append(line)
        elif stripped.startswith(fence) and not stripped[len(fence):].strip():
            fence = None
        else:
            blocks[-1][1].append(line)
    return prose, blocks


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, markup dropped, lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def _anchors(path: Path) -> frozenset[str]:
    prose, _ = _split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for line in prose:
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(anchors)


def _links(path: Path) -> list[str]:
    prose, _ = _split_fences(path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", "\n".join(prose))  # code spans hold no links
    inline = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    reference = re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", text, flags=re.M)
    return inline + reference


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_point_at_files_and_headings_that_exist(page):
    broken = []
    for target in _links(page):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{_rel(page)}: " + "; ".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = set(), [README]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in _links(page):
            file_part = target.partition("#")[0]
            if file_part.endswith(".md") and not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", file_part):
                dest = (page.parent / file_part).resolve()
                if dest.exists():
                    todo.append(dest)
    missing = [_rel(p) for p in PAGES if p.resolve() not in reached]
    assert not missing, f"not linked from the README or a page it links: {missing}"


def test_the_readme_is_an_entry_point_not_a_manual():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {README_MAX_LINES})"


# -- shell examples ----------------------------------------------------------------------------------


def _shell_lines(path: Path) -> list[str]:
    """Command lines of the shell examples: whole bash blocks (continuations joined), and `$ ` lines."""
    _, blocks = _split_fences(path.read_text(encoding="utf-8"))
    lines = []
    for info, body in blocks:
        text = "\n".join(body).replace("\\\n", " ")
        for line in text.splitlines():
            if line.lstrip().startswith("$ "):
                lines.append(line.lstrip()[2:])
            elif info in SHELL_FENCES:
                lines.append(line)
    return lines


def _is_dear_local(words: list[str]) -> int | None:
    """How many words name the program when ``words`` run dear-local (else None)."""
    if not words:
        return None
    if words[0] == "dear-local" or words[0].endswith("/dear-local"):
        return 1
    if re.fullmatch(r"(?:\S*/)?python(?:3(?:\.\d+)?)?", words[0]) and words[1:3] == ["-m", "dear_local"]:
        return 3
    return None


def _dear_local_commands(line: str) -> list[list[str]]:
    """The argument lists of every dear-local command on one shell line (pipes, `&&`, env prefixes)."""
    if "dear-local" not in line and "dear_local" not in line:
        return []
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    commands, segment = [], []
    for token in [*tokens, ";"]:
        if token and set(token) <= set("|&;()"):
            words = []
            skip = False
            for word in segment:  # drop redirections and their targets
                if skip:
                    skip = False
                elif set(word) <= set("<>") or re.fullmatch(r"\d[<>]+", word):
                    skip = True
                else:
                    words.append(word)
            while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # VAR=value prefixes
                words.pop(0)
            program = _is_dear_local(words)
            if program is not None:
                commands.append(words[program:])
            segment = []
        else:
            segment.append(token)
    return commands


def _doc_commands() -> list[tuple[str, list[str]]]:
    return [(f"{_rel(page)}: {line.strip()}", args)
            for page in PAGES for line in _shell_lines(page) for args in _dear_local_commands(line)]


@lru_cache(maxsize=None)
def _cli():
    return typer.main.get_command(app)


def _options(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return names


def test_the_docs_show_dear_local_commands():
    assert len(_doc_commands()) >= 20, "the command-line parser of this test found too few commands"


def test_every_documented_command_and_option_exists():
    cli = _cli()
    wrong = []
    for where, args in _doc_commands():
        if not args or args[0].startswith("-"):
            if any(a not in ("--help", "--version") for a in args if a.startswith("-")):
                wrong.append(f"{where}: options before a command")
            continue
        command = cli.commands.get(args[0])
        if command is None:
            wrong.append(f"{where}: no command {args[0]!r}")
            continue
        known = _options(command)
        for arg in args[1:]:
            if arg.startswith("--") or re.fullmatch(r"-[A-Za-z]", arg):
                if arg.split("=", 1)[0] not in known:
                    wrong.append(f"{where}: `dear-local {args[0]}` has no option {arg.split('=', 1)[0]}")
    assert not wrong, "\n".join(wrong)


def test_every_documented_command_answers_help():
    names = sorted({args[0] for _, args in _doc_commands() if args and not args[0].startswith("-")})
    assert names
    runner = CliRunner()
    failed = []
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        if result.exit_code != 0:
            failed.append(f"dear-local {name} --help: exit {result.exit_code}\n{result.output}")
    assert not failed, "\n".join(failed)


def test_the_documented_commands_that_need_no_model_run():
    runner = CliRunner()
    ran, failed = 0, []
    for where, args in _doc_commands():
        if args and args[0] in RUNS_WITHOUT_MODEL:
            ran += 1
            result = runner.invoke(app, args)
            if result.exit_code != 0:
                failed.append(f"{where}: exit {result.exit_code}\n{result.output}")
    assert ran, "no documented command that runs without a model was found"
    assert not failed, "\n".join(failed)


def test_python_m_dear_local_is_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "dear_local", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for name in _cli().commands:
        assert name in proc.stdout


def test_ci_runs_the_readme_test_command_verbatim():
    """docs/development.md says CI runs the README's test command as written."""
    readme_commands = [line for line in _shell_lines(README) if "pytest" in line]
    assert readme_commands, "the README lost its test command"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands[0] in ci.splitlines()
