"""The agreement check for pointwise rankers: a transformers reference of the SmolLM2 pointwise
stand-in, recorded by `dear-local reference`, and its F32, Q8_0 and Q4_K_M GGUFs checked by
`dear-local check`."""

from __future__ import annotations

import json

import pytest

from dear_local.errors import ReferenceError_, UserInputError
from optional import needs

pytestmark = [needs("torch", "transformers", "gguf", "llama_cpp", "pytrec_eval", "scipy", "matplotlib", "psutil")]


@pytest.fixture(scope="module")
def pointwise_reference(standin_pointwise_dir, tmp_path_factory):
    from dear_local_convert.reference import write_pointwise_reference
    from dear_local_convert.slices import load_slice

    out = tmp_path_factory.mktemp("pointwise-ref") / "ref.jsonl"
    return write_pointwise_reference(standin_pointwise_dir, load_slice("noveleval", queries=3, passages=10), out,
                                     device="cpu", dtype="fp32", model_name="dear-p-3b-ce")


@pytest.fixture(scope="module")
def pointwise_ladder(standin_pointwise_dir, tmp_path_factory):
    from dear_local_convert.quant.quantize import quantize
    from dear_local_convert.to_gguf.writer import convert_checkpoint

    out = tmp_path_factory.mktemp("pointwise-ladder")
    f32 = convert_checkpoint(standin_pointwise_dir, out, "f32", name="smollm2-p")
    quantize(f32, ["Q8_0", "Q4_K_M"], out)
    return [f32, out / "smollm2-p-Q8_0.gguf", out / "smollm2-p-Q4_K_M.gguf"]


def test_the_reference_reads_the_tokenizers_own_pairs(pointwise_reference, standin_pointwise_dir):
    from transformers import AutoTokenizer

    from dear_local.contract.pointwise import get_pointwise_template
    from dear_local_convert.reference import read_pointwise_reference
    from dear_local_convert.slices import load_slice

    header, queries = read_pointwise_reference(pointwise_reference)
    assert header["kind"] == "pointwise" and header["template"] == "dear-p" and header["dtype"] == "fp32"
    tok = AutoTokenizer.from_pretrained(standin_pointwise_dir)
    tmpl = get_pointwise_template("dear-p")
    q = load_slice("noveleval", queries=1, passages=10).queries[0]
    assert queries[0]["prompt_ids"] == [
        tok(*tmpl.texts(q.text, p), truncation=True, max_length=228)["input_ids"] for p in q.passages
    ]
    assert queries[0]["prompt_ids"][0][0] == 1  # <|im_start|>, SmolLM2's begin-of-text, opens the pair
    scores = queries[0]["scores"]
    assert queries[0]["order"] == sorted(q.docids, key=lambda d: -scores[list(q.docids).index(d)])


def test_check_reports_each_quants_scores_against_the_reference(cli, pointwise_reference, pointwise_ladder, tmp_path):
    """F32 reproduces the reference; Q8_0 and Q4_K_M are measured, and their gates judged, from the same run."""
    code, out, err = cli("check", "--reference", str(pointwise_reference), "--out", str(tmp_path / "r"),
                         *map(str, pointwise_ladder), "--gate", "min_mean_kendall_tau=0.5")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["kind"] == "pointwise"
    rows = {r["label"]: r for r in report["rows"]}
    assert list(rows) == ["F32", "Q8_0", "Q4_K_M"]
    f32 = rows["F32"]
    assert f32["mean_tau"] >= 0.99 and f32["top10_overlap"] == 1.0 and f32["delta_ndcg10"] == 0.0
    assert f32["max_abs_error"] <= 2e-2 * max(1.0, abs(f32["mean_abs_error"]) * 50)
    assert f32["gate_failures"] == []
    for r in rows.values():
        assert -1 <= r["mean_tau"] <= 1 and -1 <= r["mean_spearman"] <= 1 and 0 <= r["top10_overlap"] <= 1
        assert r["docs_per_s"] > 0 and r["peak_rss"] > 0 and r["max_abs_error"] >= r["mean_abs_error"] >= 0
    assert rows["Q8_0"]["mean_tau"] >= 0.8
    assert report["gates"] == {"min_mean_kendall_tau": 0.5, "min_top10_overlap": 0.8, "max_delta_ndcg10": 0.02}
    assert report["reference_row"]["mean_tau"] == pytest.approx(1.0) and report["reference_row"]["max_abs_error"] == 0.0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "pointwise ranker" in md and "| Q4_K_M |" in md and "Spearman" in md
    assert (tmp_path / "r" / "agreement.png").stat().st_size > 1000
    failed = [label for label, r in rows.items() if r["gate_failures"]]
    assert code == (1 if failed else 0), err
    assert "| F32 |" in out


def test_differing_pair_ids_stop_the_check_naming_the_query_and_passage(pointwise_reference, pointwise_ladder, tmp_path):
    from dear_local_convert.agreement.pointwise import check_pointwise

    lines = pointwise_reference.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["prompt_ids"][3][5] += 1
    lines[2] = json.dumps(rec)
    bad = tmp_path / "ref.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReferenceError_, match=rf"query {rec['qid']}, passage {rec['docids'][3]} differ .* position 5"):
        check_pointwise(bad, pointwise_ladder[:1])


def test_a_listwise_file_against_a_pointwise_reference_and_the_reverse_are_one_line(
        cli, pointwise_reference, pointwise_ladder, standin_gguf, tmp_path):
    code, out, err = cli("check", "--reference", str(pointwise_reference), "--out", str(tmp_path / "a"), str(standin_gguf))
    assert code != 0 and "is a listwise model, not a pointwise ranker" in err and "Traceback" not in err
    from dear_local_convert.agreement.check import check

    listwise_ref = tmp_path / "listwise.jsonl"
    header = {"type": "header", "format": "dear-local-reference/1", "model": {"name": None}, "vocab": {},
              "dtype": "bf16", "device_name": "cpu",
              "profile": {"template": "card", "window": 20, "stride": 10, "decoding": "greedy"},
              "slice": {"name": "noveleval", "sha256": "x", "queries": 0, "passages": 10}}
    listwise_ref.write_text(json.dumps(header) + "\n")
    with pytest.raises(UserInputError, match=r"smollm2-p-F32\.gguf is a pointwise ranker \(DeAR-P\) but the reference "
                                              "is a listwise one"):
        check(listwise_ref, pointwise_ladder[:1])
    code, out, err = cli("check", "--reference", str(pointwise_reference), "--out", str(tmp_path / "b"),
                         str(pointwise_ladder[0]), "--template", "card")
    assert code == 2 and "drop them" in err


def test_the_reference_command_picks_the_pointwise_reference_by_itself(cli, standin_pointwise_dir, tmp_path):
    out = tmp_path / "ref.jsonl"
    code, stdout, err = cli("reference", str(standin_pointwise_dir), "--out", str(out), "--queries", "1",
                            "--passages", "3", "--device", "cpu", "--dtype", "fp32")
    assert code == 0, err
    header, *queries = [json.loads(line) for line in out.read_text().splitlines()]
    assert header["format"] == "dear-local-pointwise-reference/1" and len(queries[0]["scores"]) == 3
    code, stdout, err = cli("reference", str(standin_pointwise_dir), "--out", str(tmp_path / "b.jsonl"),
                            "--template", "card")
    assert code == 2 and "a pointwise ranker's reference reads pairs with its pointwise template" in err
