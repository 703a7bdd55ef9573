"""Reference run -> check -> report on the stand-in, and the check's refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dear_local_convert.agreement.check import check
from dear_local_convert.reference import read_reference, write_reference
from dear_local_convert.agreement.report import write_report
from dear_local_convert.slices import load_slice
from dear_local.contract import Profile
from dear_local.errors import ReferenceError_
from optional import needs

pytestmark = needs("torch", "transformers")

PROFILE = Profile(template="rankgpt-chat", decoding="constrained")
QUERIES, PASSAGES = 3, 6


@pytest.fixture(scope="module")
def reference_file(standin_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    eval_slice = load_slice("noveleval", queries=QUERIES, passages=PASSAGES)
    return write_reference(standin_dir, eval_slice, PROFILE, out, device="cpu", dtype="bf16",
                           model_name="smollm2-135m-instruct")


@pytest.fixture(scope="module")
def q4_gguf(standin_bf16_gguf, tmp_path_factory):
    from dear_local_convert.quant.quantize import quantize

    out = tmp_path_factory.mktemp("q4")
    quantize(standin_bf16_gguf, ["Q4_K_M"], out)
    return next(out.glob("*Q4_K_M.gguf"))


def test_reference_records_provenance_and_every_query(reference_file):
    header, queries = read_reference(reference_file)
    assert header["profile"] == PROFILE.to_dict()
    assert header["slice"]["name"] == "noveleval" and header["slice"]["queries"] == QUERIES
    assert header["dtype"] == "bf16" and header["device"] == "cpu"
    assert header["torch"] and header["transformers"] and header["dear_local"]
    assert [q["qid"] for q in queries] == ["0", "1", "2"]
    for q in queries:
        (w,) = q["windows"]
        assert w["prompt_ids"] and w["output_ids"] and w["status"] == "ok"
        assert sorted(q["order"]) == sorted(f"{q['qid']}-{j}" for j in range(PASSAGES))
        assert len(q["first_token_logprobs"]) == PASSAGES


def test_check_reports_bf16_and_q4_against_the_reference(reference_file, standin_bf16_gguf, q4_gguf, tmp_path):
    report = check(reference_file, [standin_bf16_gguf, q4_gguf], gates={"min_mean_kendall_tau": -1.0})
    bf16, q4 = report["rows"]
    assert bf16.label == "BF16" and q4.label == "Q4_K_M"
    # BF16 holds the same weights as the reference: its rankings follow it closely.
    assert bf16.mean_tau >= 0.8 and bf16.top1_pct >= 66
    assert bf16.first_token_kl < 0.05
    assert q4.bytes < bf16.bytes
    assert 4.0 < q4.bits_per_weight < 7.5 and 15 < bf16.bits_per_weight < 17
    for row in report["rows"]:
        assert row.status_counts["ok"] == QUERIES  # constrained decoding never malforms
        assert set(row.ndcg) == {"ndcg@1", "ndcg@5", "ndcg@10"}
        assert row.seconds_per_window > 0 and row.peak_rss > 0
    assert report["passed"]
    paths = write_report(report, tmp_path / "report")
    md = paths["md"].read_text()
    assert "| reference" in md and "| BF16" in md and "| Q4_K_M" in md
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())["rows"][0]["label"] == "BF16"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dear_local", *args], capture_output=True, text=True, timeout=900)


def test_a_failing_gate_exits_non_zero_after_writing_the_report(reference_file, standin_bf16_gguf, tmp_path):
    proc = _cli("check", "--reference", str(reference_file), str(standin_bf16_gguf), "--out", str(tmp_path / "r"),
                "--gate", "min_mean_kendall_tau=1.01")
    assert proc.returncode == 1, proc.stderr
    assert "gates failed" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "r" / "report.md").is_file()


def test_check_refuses_a_different_profile_or_slice(reference_file, standin_bf16_gguf, tmp_path):
    with pytest.raises(ReferenceError_, match="profile"):
        check(reference_file, [standin_bf16_gguf], template="rankgpt-chat", decoding="greedy")
    with pytest.raises(ReferenceError_, match="slice"):
        check(reference_file, [standin_bf16_gguf], slice_name="dl19-top20")
    proc = _cli("check", "-r", str(reference_file), str(standin_bf16_gguf), "-o", str(tmp_path), "--decoding", "greedy")
    assert proc.returncode == 2 and "recorded with profile" in proc.stderr


def test_check_refuses_a_reference_whose_slice_hash_differs(reference_file, standin_bf16_gguf, tmp_path):
    lines = reference_file.read_text().splitlines()
    header = json.loads(lines[0])
    header["slice"]["sha256"] = "0" * 64
    bad = tmp_path / "ref.jsonl"
    bad.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(ReferenceError_, match="differs"):
        check(bad, [standin_bf16_gguf])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_check_refuses_a_corrupt_reference(reference_file, standin_bf16_gguf, tmp_path, damage):
    text = reference_file.read_text()
    bad = tmp_path / "ref.jsonl"
    bad.write_text({"truncate": text[: len(text) // 2], "garbage": "{not json\n", "empty": ""}[damage])
    with pytest.raises(ReferenceError_):
        check(bad, [standin_bf16_gguf])
    proc = _cli("check", "-r", str(bad), str(standin_bf16_gguf), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "reference" in proc.stderr


def test_check_refuses_a_gguf_with_another_vocabulary(reference_file, tiny_f32_gguf):
    with pytest.raises(ReferenceError_, match="vocabulary"):
        check(reference_file, [tiny_f32_gguf])
