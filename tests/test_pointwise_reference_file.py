"""A pointwise reference file is untrusted input: any damage is one ReferenceError_ line, never a traceback."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local.errors import ReferenceError_
from dear_local_convert.reference.pointwise import FORMAT, read_pointwise_reference

HEADER = {"type": "header", "format": FORMAT, "model": {"name": None}, "template": "dear-p", "dtype": "fp32",
          "device_name": "cpu", "slice": {"name": "noveleval", "sha256": "ab", "queries": 1, "passages": 2}}
QUERY = {"type": "query", "qid": "1", "docids": ["a", "b"], "scores": [1.0, 2.0], "prompt_ids": [[1, 2], [1, 3]],
         "order": ["b", "a"]}
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


def test_a_sound_file_reads_back(tmp_path):
    path = tmp_path / "ref.jsonl"
    path.write_text(json.dumps(HEADER) + "\n" + json.dumps(QUERY) + "\n")
    header, queries = read_pointwise_reference(path)
    assert header["template"] == "dear-p" and queries == [QUERY]


@settings(max_examples=100, deadline=None)
@given(where=st.sampled_from(["header", "query", "slice"]), key=st.sampled_from(
    sorted(set(HEADER) | set(QUERY) | set(HEADER["slice"]))), value=JSON)
def test_any_damaged_field_is_refused_in_one_line_or_still_reads(tmp_path_factory, where, key, value):
    header, query = json.loads(json.dumps(HEADER)), json.loads(json.dumps(QUERY))
    target = {"header": header, "query": query, "slice": header["slice"]}[where]
    target[key] = value
    path = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    path.write_text(json.dumps(header) + "\n" + json.dumps(query) + "\n")
    try:
        read_pointwise_reference(path)
    except ReferenceError_ as exc:
        assert "\n" not in str(exc) and "recreate it" in str(exc)


@pytest.mark.parametrize("text", ["", "not json\n", "[1, 2]\n", json.dumps(HEADER) + "\n{\"type\": \"query\"\n"])
def test_files_that_are_not_references_are_refused(tmp_path, text):
    path = tmp_path / "ref.jsonl"
    path.write_text(text)
    with pytest.raises(ReferenceError_):
        read_pointwise_reference(path)
