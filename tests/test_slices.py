"""Eval slices: counts, hashes, cutting, and refusing bad or missing data."""

from __future__ import annotations

import shutil

import pytest

from dear_local_convert.slices import DEFAULT_SLICE, list_slices, load_slice, slice_sources
from dear_local.errors import DataError, UserInputError
from dear_local.settings import get_settings

# Slice identities as recorded in reference files. If one changes, every existing reference
# stops matching its slice: change them only on purpose.
NOVELEVAL_SHA256 = "d1ac005445c3ce806f92952627df341a3e15b6629ecd13d5788ba2748ff44627"
DL19_TOP20_SHA256 = "56dbfe252ce0a5ca63a461777430fe44e98de4fc67ae39057ae3aa918c16c348"
DL19_TOP100_SHA256 = "293ed5c6fd163b33ead67632e2cf3a18268666d7ebed14bb2c71ef8e117814cb"


def grade_counts(qrels):
    counts = {}
    for judged in qrels.values():
        for g in judged.values():
            counts[g] = counts.get(g, 0) + 1
    return counts


def test_list_slices_names_the_three_slices_default_first():
    names = [s.name for s in list_slices()]
    assert names == ["noveleval", "dl19-top20", "dl19-top100"]
    assert DEFAULT_SLICE == names[0]


def test_a_slice_query_becomes_a_runtime_request_of_the_same_candidates():
    from dear_local.formats.request import Request

    query = load_slice("dl19-top20", queries=1, passages=3).queries[0]
    request = query.to_request()
    assert type(request) is Request and request.qid == query.qid and request.query == query.text
    assert request.documents == list(query.passages) and request.docids == list(query.docids)
    request.documents.pop()  # the request is the caller's to cut; the slice stays as loaded
    assert len(query.passages) == 3


def test_noveleval_has_21_queries_of_20_judged_passages():
    sl = load_slice()
    assert sl.name == "noveleval"
    assert len(sl.queries) == 21 and sl.n_passages == 420
    assert [q.qid for q in sl.queries] == [str(i) for i in range(21)]
    assert sl.queries[3].docids == tuple(f"3-{j}" for j in range(20))
    assert grade_counts(sl.qrels) == {0: 290, 1: 40, 2: 90}
    assert sl.queries[0].text == "How many different Spider-Men are there in Across the Spider-Verse?"
    assert sl.sha256 == NOVELEVAL_SHA256


def test_noveleval_corpus_is_read_as_quoted_tsv():
    # A naive split on the first tab would keep the CSV quoting ('"""The exact...') and break
    # passage 14-17, whose text holds tabs.
    passages = {d: p for q in load_slice().queries for d, p in zip(q.docids, q.passages)}
    assert passages["0-4"].startswith('"The exact number? Oh boy')
    assert passages["14-17"].startswith("Top earning footballers June/July 2023 Player\tClub\t")


def test_dl19_slices_have_43_queries_and_keep_msmarco_text_as_is():
    top20, top100 = load_slice("dl19-top20"), load_slice("dl19-top100")
    assert len(top20.queries) == len(top100.queries) == 43
    assert {len(q.docids) for q in top20.queries} == {20}
    assert {len(q.docids) for q in top100.queries} == {100}
    assert sum(len(j) for j in top100.qrels.values()) == 9260
    assert top100.queries[0].qid == "264014"
    assert top100.queries[0].text == "how long is life cycle of flea"
    assert top20.queries[0].docids == top100.queries[0].docids[:20]
    # MS MARCO's own mojibake is part of the published data and stays.
    assert any("Â°F" in p for q in top100.queries for p in q.passages)
    assert top20.source_sha256 == top100.source_sha256
    assert (top20.sha256, top100.sha256) == (DL19_TOP20_SHA256, DL19_TOP100_SHA256)


def test_cut_keeps_the_first_queries_and_passages_and_all_their_judgments():
    full = load_slice()
    cut = load_slice("noveleval", queries=5, passages=10)
    assert [q.qid for q in cut.queries] == ["0", "1", "2", "3", "4"]
    assert all(q.docids == tuple(f"{q.qid}-{j}" for j in range(10)) for q in cut.queries)
    assert cut.queries[2].passages == full.queries[2].passages[:10]
    assert cut.passages_per_query == 10 and cut.n_passages == 50
    # trec_eval builds the ideal ranking from every judgment, not only the kept candidates.
    assert set(cut.qrels) == {"0", "1", "2", "3", "4"}
    assert all(len(cut.qrels[q.qid]) == 20 for q in cut.queries)

    assert cut.sha256 != full.sha256
    assert full.cut(5, 10).sha256 == cut.sha256
    assert full.cut(5).cut(passages=10).sha256 == cut.sha256
    assert full.cut(21, 20).sha256 == full.sha256
    assert load_slice("noveleval", queries=5).sha256 not in {full.sha256, cut.sha256}


@pytest.mark.parametrize("queries,passages", [(0, None), (22, None), (None, 21), (None, -1), (1.5, None)])
def test_bad_cuts_are_refused(queries, passages):
    with pytest.raises(UserInputError):
        load_slice("noveleval", queries=queries, passages=passages)


def test_unknown_slice_is_refused_with_the_choices():
    with pytest.raises(UserInputError, match="noveleval, dl19-top20, dl19-top100"):
        load_slice("dl20")


@pytest.fixture
def mirror(tmp_path, shared_dir, monkeypatch):
    """A private copy of the NovelEval mirror, used as DEAR_LOCAL_DATA."""
    root = tmp_path / "mirror"
    (root / "noveleval").mkdir(parents=True)
    for src in (shared_dir / "data" / "noveleval").iterdir():
        # copyfile, not copytree: the shared data is read-only and the tests modify the copy.
        shutil.copyfile(src, root / "noveleval" / src.name)
    monkeypatch.setenv("DEAR_LOCAL_DATA", str(root))
    return root


def test_a_mirror_copy_loads_like_the_shared_data(mirror):
    assert load_slice().sha256 == NOVELEVAL_SHA256


def test_a_corrupted_mirror_file_is_refused(mirror):
    corpus = mirror / "noveleval" / "corpus.tsv"
    data = bytearray(corpus.read_bytes())
    data[100] = ord("X") if data[100] != ord("X") else ord("Y")
    corpus.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match its pinned sha256") as exc:
        load_slice()
    assert str(corpus) in str(exc.value)
    assert "sunnweiwei/RankGPT" in str(exc.value)


def test_a_missing_mirror_file_names_the_fix(mirror):
    (mirror / "noveleval" / "qrels.txt").unlink()
    with pytest.raises(DataError, match="missing from the offline data mirror") as exc:
        load_slice()
    assert "DEAR_LOCAL_DATA" in str(exc.value)


def test_offline_without_data_names_the_fix(monkeypatch):
    monkeypatch.delenv("DEAR_LOCAL_DATA")
    monkeypatch.setenv("DEAR_LOCAL_OFFLINE", "1")
    with pytest.raises(DataError, match="offline mode is on") as exc:
        load_slice()
    message = str(exc.value)
    assert "DEAR_LOCAL_DATA" in message and "DEAR_LOCAL_OFFLINE" in message
    assert "raw.githubusercontent.com/sunnweiwei/RankGPT/0d62bc38" in message


def test_cached_files_are_used_offline_and_damaged_ones_dropped(shared_dir, monkeypatch):
    monkeypatch.delenv("DEAR_LOCAL_DATA")
    monkeypatch.setenv("DEAR_LOCAL_OFFLINE", "1")
    cache = get_settings().data_cache
    for src in slice_sources("noveleval"):
        dest = cache / src.relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_dir / "data" / src.relpath, dest)
    assert load_slice().sha256 == NOVELEVAL_SHA256

    damaged = cache / "noveleval" / "queries.tsv"
    damaged.write_text("0\tnot the real query\n", encoding="utf-8")
    with pytest.raises(DataError, match="offline mode is on"):
        load_slice()
    assert not damaged.exists()  # removed, so the next online load downloads it again
