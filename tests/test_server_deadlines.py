"""Deadlines: an answer before the client's timeout, holding the ranking as far as it got (fast tier).

The fake model is made slow (each window waits in its prefill), and the server runs under uvicorn on
127.0.0.1, so the times measured are what a client sees. See dear_local/server/deadlines.py.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dear_local import Profile, Reranker  # noqa: E402
from dear_local.engine import FirstStage, RankingState, rank_documents  # noqa: E402
from dear_local.server import ServerSettings, create_app  # noqa: E402
from dear_local.server import deadlines  # noqa: E402
from dear_local.server.deadlines import DeadlineReached  # noqa: E402
from dear_local.server.runner import background  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402

PROFILE = Profile(template="rankgpt-chat", decoding="greedy")
DOCS = [f"passage number {i} about topic {i % 7}" for i in range(100)]  # 9 windows of 20, stride 10


class SlowBackend(FakeBackend):
    """The fake model, but every window takes ``delay`` seconds more (in its prefill)."""

    def __init__(self, delay: float, **kw) -> None:
        super().__init__(**kw)
        self.delay = delay

    def prefill(self, ids):
        time.sleep(self.delay)
        return super().prefill(ids)


@contextmanager
def serving(delay: float = 0.0, **settings_kw):
    """A real uvicorn over the slow fake model; yields (httpx client, app)."""
    base = dict(model="fake.gguf", max_queue=8, timeout=60.0, max_documents=100)
    settings = ServerSettings(**{**base, **settings_kw})
    app = create_app(settings, reranker=Reranker("fake", profile=PROFILE, backend=SlowBackend(delay)))
    with background(app, settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, app


def timed_post(client, path: str, body: dict, headers: dict | None = None) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    r = client.post(path, json=body, headers=headers or {})
    return r, time.monotonic() - start


def assert_permutation(indices: list[int], n: int) -> None:
    assert sorted(indices) == list(range(n)), indices


def hold_worker(app) -> threading.Event:
    """Occupy the app's single worker until the returned event is set."""
    release = threading.Event()
    queue = app.state.service.queue
    queue.submit(lambda abandoned: release.wait(60))
    deadline = time.monotonic() + 10
    while not (queue.busy and queue.pending == 0):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return release


# -- the engine's state ------------------------------------------------------------------------------


def test_a_ranking_state_gives_finished_windows_applied_and_the_rest_in_input_order():
    seen: list[list[int]] = []
    state = RankingState(len(DOCS))
    assert state.snapshot().order == list(range(len(DOCS))) and not state.snapshot().complete

    def stop_after_two(_window):
        seen.append(state.snapshot().order)
        if len(seen) == 2:
            raise KeyboardInterrupt  # any exception stops the ranking there

    with pytest.raises(KeyboardInterrupt):
        rank_documents(FakeBackend(), PROFILE, "q", DOCS, stop_after_two, state)
    snap = state.snapshot()
    assert len(snap.windows) == 2 and snap.planned == 9 and not snap.complete
    assert_permutation(snap.order, len(DOCS))
    # The fake ranks each window in reverse; windows run back to front: [80, 100), then [70, 90).
    tail = list(range(80, 100))[::-1]
    assert seen[0] == list(range(80)) + tail
    assert snap.order[:70] == list(range(70))  # untouched by the finished windows: input order
    assert snap.order[70:90] == (list(range(70, 80)) + tail[:10])[::-1]
    full = rank_documents(FakeBackend(), PROFILE, "q", DOCS)
    assert full.complete and full.planned == 9


@hypothesis_settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 45), depth=st.integers(0, 45), seed=st.integers(0, 2**16), listwise=st.booleans())
def test_a_ranking_state_with_a_first_stage_snapshots_its_order_scores_and_tokens(n, depth, seed, listwise):
    """A first stage alone plans no window and its snapshot is complete; with windows, the snapshot
    starts from the first stage's order; either way it carries the first stage's scores and tokens."""
    rng = random.Random(seed)
    docs = DOCS[:n]
    order = rng.sample(range(n), n)
    first = FirstStage(order=order, scores=[rng.random() for _ in range(n)], truncated=[False] * n, tokens=7 * n)
    state = RankingState(n)
    ranking = rank_documents(FakeBackend() if listwise else None, PROFILE, "q", docs, state=state,
                             first_stage=first, depth=depth)
    snap = state.snapshot()
    assert snap.complete and ranking.complete
    assert snap.order == ranking.order and snap.windows == ranking.windows
    for r in (snap, ranking):
        assert (r.scores, r.score_kind, r.first_stage_tokens) == (first.scores, FirstStage.KIND, 7 * n)
    ranked = min(depth, n) if listwise else 0
    assert ranking.order[ranked:] == order[ranked:] and sorted(ranking.order[:ranked]) == sorted(order[:ranked])
    if len(ranking.windows) < 2:
        return
    # stopped after the first window (as a deadline stops it): the first stage's order with that window applied
    state = RankingState(n)

    def stop(_window):
        raise DeadlineReached()

    with pytest.raises(DeadlineReached):
        rank_documents(FakeBackend(), PROFILE, "q", docs, stop, state, first_stage=first, depth=depth)
    snap, (window,) = state.snapshot(), ranking.windows[:1]
    expected = list(order)
    expected[window.start:window.end] = [expected[window.start:window.end][j] for j in window.order]
    assert snap.order == expected and not snap.complete and snap.planned == len(ranking.windows)
    assert (snap.scores, snap.score_kind, snap.first_stage_tokens) == (first.scores, FirstStage.KIND, 7 * n)
    text = deadlines.warning(len(snap.windows), snap.planned, "done")
    assert f"after 1 of {snap.planned} windows" in text and "pointwise ranker's order" in text


def test_a_deadline_warning_says_which_order_the_documents_are_in():
    assert "input order" in deadlines.warning(0, 9) and "derived from rank" in deadlines.warning(2, 9)
    unfinished = deadlines.warning(0, 1, "unfinished")
    assert "before the pointwise ranker finished" in unfinished and "input order" in unfinished
    done = deadlines.warning(0, 2, "done")
    assert "pointwise ranker's order" in done and "probabilities" in done and "input order" not in done


# -- a deadline answers in time --------------------------------------------------------------------------


def test_a_2_second_deadline_answers_in_under_2_5_s_with_a_warning_and_a_complete_permutation():
    with serving(delay=0.4) as (c, _app):
        r, took = timed_post(c, "/v1/rerank", {"query": "q", "documents": DOCS}, {"X-Deadline": "2"})
    assert r.status_code == 200, r.text
    assert took < 2.5, took
    body = r.json()
    assert_permutation([x["index"] for x in body["results"]], len(DOCS))
    meta = body["meta"]
    assert meta["complete"] is False and meta["scores"] == "rank"
    assert any("deadline" in w and "of 9 windows" in w for w in meta["warnings"]), meta["warnings"]
    done = len(meta["parse_status"])
    assert 1 <= done < 9 and r.headers["x-dear-local-partial"] == f"{done}/9 windows"
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_the_server_default_deadline_applies_to_every_shape_and_a_header_overrides_it():
    with serving(delay=0.4, deadline=1.0) as (c, _app):
        tei, took = timed_post(c, "/rerank", {"query": "q", "texts": DOCS})
        assert tei.status_code == 200 and took < 1.5, (took, tei.text)
        assert_permutation([x["index"] for x in tei.json()], len(DOCS))
        assert tei.headers["x-dear-local-partial"].endswith("/9 windows")
        infinity, took = timed_post(c, "/rerank", {"query": "q", "documents": DOCS, "top_n": 5})
        assert infinity.status_code == 200 and took < 1.5 and len(infinity.json()["results"]) == 5
        assert infinity.json()["meta"]["complete"] is False
        small = DOCS[:20]  # one window of 0.4 s: done well before a 10 s deadline
        full, _ = timed_post(c, "/v2/rerank", {"query": "q", "documents": small}, {"X-Deadline": "10"})
    assert full.status_code == 200 and full.json()["meta"]["complete"] is True
    assert "x-dear-local-partial" not in full.headers and not full.json()["meta"]["warnings"]
    assert [x["index"] for x in full.json()["results"]] == list(range(20))[::-1]


def test_a_deadline_that_comes_during_the_first_window_answers_in_input_order():
    with serving(delay=2.0) as (c, _app):
        r, took = timed_post(c, "/v1/rerank", {"query": "q", "documents": DOCS[:20]}, {"X-Deadline": "1"})
    assert r.status_code == 200 and took < 1.5, (took, r.text)
    assert [x["index"] for x in r.json()["results"]] == list(range(20))
    assert "before any window" in " ".join(r.json()["meta"]["warnings"])


# -- a queue too long for the deadline ------------------------------------------------------------------


def test_a_queue_whose_wait_would_pass_the_deadline_answers_503_with_retry_after_at_once():
    with serving() as (c, app):
        release = hold_worker(app)
        try:
            queue = app.state.service.queue
            for _ in range(4):  # each counts the mean job time (1 s before any has run)
                queue.submit(lambda abandoned: None)
            r, took = timed_post(c, "/v1/rerank", {"query": "q", "documents": DOCS[:4]}, {"X-Deadline": "2"})
            assert r.status_code == 503 and took < 1.0, (took, r.text)
            assert r.json()["error"] == "deadline_unreachable" and "X-Deadline" in r.json()["message"]
            assert int(r.headers["retry-after"]) >= 3
            patient, _ = timed_post(c, "/v1/rerank", {"query": "q", "documents": DOCS[:4]}, {"X-Deadline": "0.5"})
            assert patient.status_code == 503
        finally:
            release.set()
        r, _ = timed_post(c, "/v1/rerank", {"query": "q", "documents": DOCS[:4]}, {"X-Deadline": "20"})
        assert r.status_code == 200, r.text


def test_a_deadline_header_that_is_not_seconds_above_0_is_a_422_naming_it():
    with serving() as (c, _app):
        for value in ["abc", "0", "-1", "nan", "inf", "", "1e999", "2 s", "x" * 500]:
            for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
                r = c.post(path, json={"query": "q", "documents": DOCS[:3]}, headers={"X-Deadline": value})
                assert r.status_code == 422 and "X-Deadline" in r.json()["message"], (value, path, r.text)
                assert "\n" not in r.json()["message"] and len(r.json()["message"]) < 200


def test_serve_refuses_a_deadline_past_the_timeout(cli, fake_gguf):
    code, _, err = cli("serve", "-m", str(fake_gguf), "--port", "0", "--timeout", "10", "--deadline", "30")
    assert code == 2 and "--deadline" in err and "--timeout" in err and "serving" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_once_windows_are_timed_a_deadline_too_short_for_one_is_answered_at_once_in_input_order():
    """Windows take 1 s here: after one has been timed, a request whose deadline cannot hold a window is
    answered at once in input order, without starting a window that would hold the worker past it."""
    with serving(delay=1.0, max_queue=4) as (client, app):
        warm, _ = timed_post(client, "/v1/rerank", {"query": "q", "documents": DOCS[:3]})
        assert warm.status_code == 200 and app.state.service.window_seconds >= 1.0
        quick, took = timed_post(client, "/v1/rerank", {"query": "q", "documents": DOCS[:3]}, {"X-Deadline": "0.5"})
        assert quick.status_code == 200 and took < 0.5, took
        assert quick.json()["meta"]["complete"] is False and "before any window" in quick.json()["meta"]["warnings"][0]
        assert [x["index"] for x in quick.json()["results"]] == [0, 1, 2]
        assert not app.state.service.queue.busy  # no window was started for it


def test_a_job_running_past_its_deadline_counts_one_more_step_in_the_wait():
    """A job whose deadline has passed is still finishing a step llama.cpp cannot stop (a window): the
    wait estimate counts the caller's guess of one step for it, not nothing."""
    from dear_local.server.queue import WorkQueue

    queue = WorkQueue(4)
    queue.start()
    release = threading.Event()
    try:
        queue.submit(lambda abandoned: release.wait(30), deadline_at=time.monotonic() + 0.05)
        deadline = time.monotonic() + 10
        while not queue.busy:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)  # now past its deadline, still running
        assert queue.wait_estimate() == 0.0
        assert queue.wait_estimate(overrun=2.5) == pytest.approx(2.5)
    finally:
        release.set()
        queue.close()
