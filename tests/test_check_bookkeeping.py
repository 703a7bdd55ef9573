"""The agreement check's bookkeeping over the scripted fake backend (fast tier).

A reference recorded with the fake, then two "quants": one that answers like the
reference (every figure at full agreement) and one that keeps the input order
(the exact reverse of the reference's answer). The check on real GGUFs against a
transformers reference is in test_check.py.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pytrec_eval")

from dear_local import Profile  # noqa: E402
from dear_local_convert.agreement.check import check, gate_failure, run_check  # noqa: E402
from dear_local_convert.agreement.gates import GATE_KEYS, parse_gate_overrides  # noqa: E402
from dear_local_convert.reference import read_reference, record_reference  # noqa: E402
from dear_local_convert.agreement.row import CheckRow  # noqa: E402
from dear_local_convert.slices import load_slice  # noqa: E402
from dear_local.errors import UserInputError  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402

PROFILE = Profile(template="rankgpt-chat", decoding="greedy")


@pytest.fixture
def reference(tmp_path, fake_gguf):
    eval_slice = load_slice("noveleval", queries=3, passages=5)
    engine = {"device": "cpu", "device_name": "fake", "dtype": "fp32", "torch": None, "transformers": None}
    path = tmp_path / "ref.jsonl"
    record_reference(FakeBackend(), eval_slice, PROFILE, path, model={"name": None}, engine=engine)
    return path


@pytest.fixture
def quants(tmp_path, fake_gguf):
    same, other = tmp_path / "m-Q8_0.gguf", tmp_path / "m-identity-Q2_K.gguf"
    for p in (same, other):
        p.write_bytes(fake_gguf.read_bytes())
    return same, other


def test_the_reference_file_records_every_query_with_its_windows(reference):
    header, queries = read_reference(reference)
    assert header["profile"] == PROFILE.to_dict() and header["slice"]["queries"] == 3
    assert [q["qid"] for q in queries] == ["0", "1", "2"]
    assert all(q["windows"][0]["raw_text"] == "[5] > [4] > [3] > [2] > [1]" for q in queries)
    assert all(len(q["first_token_logprobs"]) == 5 for q in queries)


def test_check_reports_full_agreement_and_full_disagreement(reference, quants):
    report = check(reference, list(quants), gates={"min_mean_kendall_tau": 0.5})
    same, other = report["rows"]
    assert (same.label, other.label) == ("Q8_0", "Q2_K")
    assert same.exact_match_pct == 100 and same.mean_tau == pytest.approx(1.0)
    assert same.delta_ndcg10 == pytest.approx(0.0) and same.gate_failures == ()
    assert other.exact_match_pct == 0 and other.mean_tau == pytest.approx(-1.0)
    assert other.gate_failures == ("mean Kendall tau -1.000 < 0.5",)
    assert report["reference_row"].gate_failures is None
    assert report["passed"] is False
    assert report["machine"]["cpu_buffers"] in ("extra", "plain")


def test_run_check_writes_the_report_before_the_gate_fails(reference, quants, tmp_path):
    report, paths = run_check(reference, list(quants), tmp_path / "out", gate_overrides={"min_exact_match": 0.5})
    assert json.loads(paths["json"].read_text())["rows"][1]["gate_failures"]
    assert paths["plot"].stat().st_size > 0 and "| Q2_K |" in paths["md"].read_text()
    failure = gate_failure(report, paths)
    assert failure is not None and "Q2_K" in str(failure) and failure.exit_code == 1


# The keys of a row in report.json, in order: what readers of the file rely on.
ROW_KEYS = ["label", "path", "bytes", "bits_per_weight", "exact_match_pct", "mean_tau", "min_tau", "top1_pct",
            "top5_overlap", "ndcg", "delta_ndcg10", "status_counts", "first_token_kl", "first_token_max_kl",
            "first_token_top1_pct", "seconds_per_window", "prompt_tokens_per_s", "model_calls_per_window", "peak_rss",
            "per_query_tau", "lora"]


def test_report_json_keeps_its_keys_and_reads_back_as_the_same_rows(reference, quants, tmp_path):
    report, paths = run_check(reference, list(quants), tmp_path / "out", gate_overrides={"min_exact_match": 0.5})
    written = json.loads(paths["json"].read_text())
    assert list(written) == ["reference", "reference_row", "gates", "machine", "rows", "passed"]
    assert list(written["reference_row"]) == ROW_KEYS  # the reference is not judged: no gate_failures
    assert [list(row) for row in written["rows"]] == [ROW_KEYS + ["gate_failures"]] * 2
    assert written["rows"][1]["gate_failures"] == ["exact match 0.00 < 0.5"] and written["rows"][0]["gate_failures"] == []
    assert [CheckRow.from_dict(row) for row in written["rows"]] == report["rows"]
    assert CheckRow.from_dict(written["reference_row"]) == report["reference_row"]
    ref_line = next(line for line in paths["md"].read_text().splitlines() if line.startswith("| reference"))
    assert ref_line.endswith("| - |")


def test_a_row_read_like_a_dict_still_answers_with_a_deprecation_warning(reference, quants):
    row = check(reference, list(quants), gates={})["rows"][0]
    with pytest.warns(DeprecationWarning, match=r"row\.mean_tau"):
        assert row["mean_tau"] == row.mean_tau
    with pytest.warns(DeprecationWarning):
        assert row["gate_failures"] == [] and row["status_counts"] == row.status_counts
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        row["no_such_figure"]


def test_the_check_command_exits_1_on_a_failed_gate_after_printing_the_table(cli, reference, quants, tmp_path):
    code, out, err = cli("check", "--reference", str(reference), "--out", str(tmp_path / "r"), *map(str, quants),
                         "--gate", "min_mean_kendall_tau=0.9")
    assert code == 1, err
    assert "| Q8_0 |" in out and "agreement gates failed for Q2_K" in err


@pytest.mark.parametrize("item", ["nope=1", "min_exact_match", "min_exact_match=high"])
def test_a_bad_gate_override_names_the_valid_keys_or_the_value(item):
    with pytest.raises(UserInputError) as exc:
        parse_gate_overrides([item])
    assert item.split("=")[0] in str(exc.value)
    assert any(k in str(exc.value) for k in GATE_KEYS) or "not a number" in str(exc.value)


def _json_values():
    from hypothesis import strategies as st

    return st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=4),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                        max_leaves=5)


def test_any_damaged_field_of_a_listwise_reference_is_one_line(reference, tmp_path_factory):
    """Every field the check reads, replaced by any JSON value, in the header, a query or a window: either the
    file still reads (and then every field has its type) or one ReferenceError_ line says to recreate it."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dear_local.errors import ReferenceError_

    lines = [json.loads(line) for line in reference.read_text().splitlines()]
    header, query = lines[0], lines[1]
    places = [("header", k) for k in header] + [("slice", k) for k in header["slice"]] + \
             [("query", k) for k in query] + [("window", k) for k in query["windows"][0]]

    path = tmp_path_factory.mktemp("ref") / "ref.jsonl"

    @settings(max_examples=80, deadline=None)
    @given(place=st.sampled_from(places), value=_json_values())
    def damaged(place, value):
        h, q = json.loads(json.dumps(header)), json.loads(json.dumps(query))
        target = {"header": h, "slice": h["slice"], "query": q, "window": q["windows"][0]}[place[0]]
        target[place[1]] = value
        path.write_text("\n".join(json.dumps(x) for x in [h, q, *lines[2:]]) + "\n")
        try:
            read_reference(path)
        except ReferenceError_ as exc:
            assert "\n" not in str(exc) and "recreate it" in str(exc)

    damaged()
    for top in ("null", "[1, 2]", '"text"', "3"):
        path = tmp_path_factory.mktemp("ref") / "ref.jsonl"
        path.write_text(top + "\n" + "\n".join(json.dumps(x) for x in lines[1:]) + "\n")
        with pytest.raises(ReferenceError_, match="not a dear-local reference file"):
            read_reference(path)


def test_check_refuses_to_overwrite_a_report_without_force(cli, reference, quants, tmp_path):
    out = tmp_path / "r"
    args = ["check", "--reference", str(reference), "--out", str(out), str(quants[0])]
    code, _, err = cli(*args)
    assert code == 0, err
    before = (out / "report.json").stat().st_mtime_ns
    code, _, err = cli(*args)
    assert code == 2 and "already holds a report (report.json, report.md, agreement.png); pass --force" in err
    assert (out / "report.json").stat().st_mtime_ns == before
    code, _, err = cli(*args, "--force")
    assert code == 0, err
