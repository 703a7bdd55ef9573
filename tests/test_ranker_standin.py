"""The ranking stand-in: its manifest, its committed adapter and how the store and the build find them.

The adapter's effect on rankings is measured by the agreement tests (tests/test_check.py) and
bench/bench_ranker.py; these tests hold the packaging and provenance facts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dear_local.fileio import sha256_file
from dear_local.store import get_manifest

RANKER = "smollm2-135m-ranker"


@pytest.fixture(scope="module")
def adapter_dir():
    from dear_local_convert.standins.smollm2 import bundled_adapter

    return bundled_adapter(get_manifest(RANKER).lora["bundled"])


def test_the_manifest_starts_from_the_bare_stand_in_and_its_bundled_adapter():
    m = get_manifest(RANKER)
    base = get_manifest(m.base)
    assert m.base == "smollm2-135m-instruct" and m.hf_repo == base.hf_repo
    assert m.profile == base.profile  # the adapter was trained on the stand-in's own prompt
    assert m.lora == {"bundled": "ranker_adapter"} and m.lora_label == "bundled ranker_adapter"
    assert m.default_quant in m.ladder and not m.quants  # everything is built locally


def test_the_committed_adapter_is_small_and_records_how_it_was_trained(adapter_dir):
    weights = adapter_dir / "adapter_model.safetensors"
    assert weights.stat().st_size <= 3 * 2**20
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] >= 1
    record = json.loads((adapter_dir / "training.json").read_text())
    # the record names the adapter it belongs to, and the exact data it was trained on
    assert record["adapter_sha256"] == sha256_file(weights)
    from dear_local_convert.standins.train_ranker import DEV_QIDS, HOLDOUT_QIDS, data_sha256

    assert record["data_sha256"] == data_sha256()
    assert not set(record["train_qids"]) & (set(DEV_QIDS) | set(HOLDOUT_QIDS))
    assert len(record["losses"]) == record["config"]["steps"]


def test_a_missing_bundled_adapter_is_a_one_line_error():
    from dear_local.errors import UserInputError
    from dear_local_convert.standins.smollm2 import bundled_adapter

    for name in ("no_such_adapter", "../ranker_adapter", ""):
        with pytest.raises(UserInputError, match="reinstall"):
            bundled_adapter(name)


def test_the_build_merges_the_bundled_adapter(adapter_dir):
    from dear_local_convert.build import manifest_adapter

    assert manifest_adapter(get_manifest(RANKER)).path == adapter_dir
    assert manifest_adapter(get_manifest("smollm2-135m-instruct")) is None


def test_models_lists_the_ranker_with_its_base_and_adapter(session_env):
    proc = subprocess.run([sys.executable, "-m", "dear_local", "models"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"LoRA adapter bundled ranker_adapter merged into smollm2-135m-instruct (`dear-local build {RANKER}`)" in proc.stdout
