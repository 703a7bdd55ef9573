"""Which of llama.cpp's CPU backends a process loads: the rule, and the install it runs on.

The rule (:func:`~dear_local.backends.cpu_variant.pick`) is tested over every kind of
score table; the rest runs on the llama-cpp-python installed here. The README's install
builds every x86 variant (``GGML_CPU_ALL_VARIANTS``); an older install has one CPU backend
built in, and both kinds are checked for what they must do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dear_local.backends.cpu_variant import (
    AMX_VARIANTS, BASELINE, amx_safe, compiler_of, ensure_cpu_backend, library_dir, pick, variant_files,
)
from dear_local.errors import DearLocalError, UserInputError

NAMES = ["x64", "sse42", "sandybridge", "haswell", "skylakex", "icelake", "zen4", "alderlake", "sapphirerapids"]
COMPILERS = st.one_of(st.none(), st.tuples(st.sampled_from(["gcc", "clang"]), st.integers(9, 20)))


@given(st.dictionaries(st.sampled_from(NAMES), st.integers(0, 200), min_size=1), COMPILERS)
def test_auto_takes_the_highest_score_the_cpu_runs_and_skips_amx_from_an_unsafe_compiler(scores, compiler):
    amx = {n: compiler for n in scores if n in AMX_VARIANTS}
    eligible = {n: s for n, s in scores.items() if s > 0 and (n not in AMX_VARIANTS or amx_safe(compiler))}
    if not eligible:
        with pytest.raises(DearLocalError, match="reinstall llama-cpp-python"):
            pick(scores, "auto", amx)
        return
    name, reason = pick(scores, "auto", amx)
    assert scores[name] == max(eligible.values()) and name in eligible
    skipped = [n for n in scores if n in AMX_VARIANTS and scores[n] > 0 and not amx_safe(compiler)]
    assert all(f"{n} skipped" in reason and "20824" in reason for n in skipped)


@given(st.dictionaries(st.sampled_from(NAMES), st.integers(0, 200), min_size=1), st.sampled_from(NAMES))
def test_a_named_variant_is_loaded_only_when_the_cpu_runs_it(scores, name):
    if name not in scores:
        with pytest.raises(UserInputError, match="no such CPU variant.*use auto, baseline or one of"):
            pick(scores, name, {})
    elif scores[name] == 0:
        with pytest.raises(UserInputError, match=f"DEAR_LOCAL_CPU_VARIANT={name}: this CPU lacks"):
            pick(scores, name, {})
    else:  # forcing is the way to an AMX variant from any compiler
        assert pick(scores, name, {n: ("gcc", 12) for n in AMX_VARIANTS}) == (name, "set by DEAR_LOCAL_CPU_VARIANT")


@given(st.dictionaries(st.sampled_from(NAMES), st.integers(0, 200), min_size=1))
def test_baseline_is_the_lowest_variant_the_cpu_runs(scores):
    runnable = {n: s for n, s in scores.items() if s > 0}
    if not runnable:
        with pytest.raises(UserInputError, match="baseline"):
            pick(scores, BASELINE, {})
    else:
        name, _ = pick(scores, BASELINE, {})
        assert scores[name] == min(runnable.values())


def test_amx_is_trusted_only_from_clang_or_gcc_13_and_later():
    assert [amx_safe(c) for c in [("gcc", 12), ("gcc", 13), ("clang", 15), None]] == [False, True, True, False]


def test_variant_files_are_found_by_name_in_either_folder(tmp_path):
    lib, bin_ = tmp_path / "lib", tmp_path / "bin"
    lib.mkdir(), bin_.mkdir()
    for name in ["libggml-cpu-haswell.so", "libggml-cpu-zen4.so", "libggml-base.so", "libggml-cpu.so", "README"]:
        (lib / name).write_bytes(b"")
    (bin_ / "libggml-cpu-x64.so").write_bytes(b"")
    (bin_ / "libggml-cpu-haswell.so").write_bytes(b"")  # the first folder wins
    found = variant_files([lib, bin_])
    assert found == {"haswell": lib / "libggml-cpu-haswell.so", "zen4": lib / "libggml-cpu-zen4.so",
                     "x64": bin_ / "libggml-cpu-x64.so"}


def test_the_compiler_of_an_installed_library_is_read_from_its_strings():
    compiler = compiler_of(library_dir() / "libggml-base.so")
    assert compiler is not None and compiler[0] in ("gcc", "clang") and compiler[1] >= 5


# -- the install on this machine ------------------------------------------------------------------


def _env_report(**env) -> tuple[int, dict | None, str]:
    proc = subprocess.run([sys.executable, "-m", "dear_local", "env", "--json"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    return proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else None, proc.stderr


def test_this_process_runs_a_cpu_backend_and_says_which():
    backend = ensure_cpu_backend()
    assert ensure_cpu_backend() is backend  # once per process
    files = variant_files()
    if files:
        assert backend.variant in files and backend.path == files[backend.variant]
        assert backend.scores[backend.variant] > 0 and set(backend.scores) == set(files)
    else:
        assert backend.variant is None and "built in" in backend.reason


def test_env_names_the_variant_and_a_forced_baseline_has_no_avx512():
    rc, report, err = _env_report()
    assert rc == 0, err
    if not variant_files():
        assert report["cpu backend"]["variant"] == "built in"
        pytest.skip("this llama-cpp-python has one CPU backend built in")
    auto = report["cpu backend"]["variant"]
    assert auto in report["cpu backend"]["scores on this CPU"]
    rc, forced, err = _env_report(DEAR_LOCAL_CPU_VARIANT="haswell")
    assert rc == 0, err
    assert forced["cpu backend"] == {**forced["cpu backend"], "variant": "haswell", "reason": "set by DEAR_LOCAL_CPU_VARIANT"}
    assert "AVX2" in forced["llama.cpp CPU features"] and "AVX512" not in forced["llama.cpp CPU features"]
    rc, base, err = _env_report(DEAR_LOCAL_CPU_VARIANT="baseline")
    assert rc == 0, err
    assert "AVX2" not in base["llama.cpp CPU features"]


@pytest.mark.parametrize("value", ["avx9000", "sapphirerapids-2", "haswell;rm"])
def test_a_bad_variant_setting_is_one_line_naming_the_choices(value):
    proc = subprocess.run([sys.executable, "-m", "dear_local", "env", "--model", "x.gguf"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DEAR_LOCAL_CPU_VARIANT": value})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: DEAR_LOCAL_CPU_VARIANT={value}")


@pytest.mark.parametrize("buffers", ["plain", "extra"])
def test_a_variant_this_cpu_cannot_run_is_named_before_any_model_loads(buffers, llama3_vocab_gguf):
    """Not "the model file is corrupt": with --cpu-buffers set, the variant was first loaded inside the model load."""
    from dear_local.backends.cpu_variant import _score

    unrunnable = sorted(name for name, path in variant_files().items() if _score(path) == 0)
    if not unrunnable:
        pytest.skip("this CPU runs every variant built")
    proc = subprocess.run([sys.executable, "-m", "dear_local", "rerank", "-m", str(llama3_vocab_gguf), "-q", "q",
                           "--cpu-buffers", buffers], input="a\nb\n", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DEAR_LOCAL_CPU_VARIANT": unrunnable[0]})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "DEAR_LOCAL_CPU_VARIANT" in lines[0] and "corrupt" not in lines[0], lines[0]


def test_a_forced_avx2_variant_reranks_with_the_same_answer(standin_gguf):
    """The install runs on an AVX2-only CPU: its haswell variant ranks as the best one does."""
    if not variant_files():
        pytest.skip("this llama-cpp-python has one CPU backend built in")
    out = {}
    for variant in ["auto", "haswell"]:
        proc = subprocess.run(
            [sys.executable, "-m", "dear_local", "rerank", "-m", str(standin_gguf), "-q", "capital of France",
             "--format", "json"],
            input="Berlin is in Germany.\nParis is the capital of France.\nBananas are yellow.\n",
            capture_output=True, text=True, timeout=300, env={**os.environ, "DEAR_LOCAL_CPU_VARIANT": variant},
        )
        assert proc.returncode == 0, proc.stderr
        out[variant] = [r["index"] for r in json.loads(proc.stdout)["results"]]
    assert out["auto"] == out["haswell"]


def test_the_install_has_the_cpu_variants_scripts_setup_builds():
    """The flags took effect: pip hands back any cached llama-cpp-python wheel whatever CMAKE_ARGS say,
    so an install that skipped scripts/setup's own cache shows up here, not as slow kernels."""
    missing = {"x64", "haswell", "skylakex", "icelake", "zen4", "alderlake"} - set(variant_files())
    assert not missing, f"llama-cpp-python lacks the CPU variants {sorted(missing)}: install it with scripts/setup"


def test_the_readme_test_command_is_what_ci_runs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    ci = (root / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci.startswith("scripts/setup dev && ") and f"\n{ci}\n" in readme
    setup = (root / "scripts" / "setup").read_text(encoding="utf-8")
    assert "-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON" in setup and "--cache-dir" in setup
