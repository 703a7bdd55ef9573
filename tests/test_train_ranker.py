"""The ranking stand-in's training script: end to end on a tiny budget, reproducible, and its data contract.

The end-to-end tests need the stand-in checkpoint (slow tier); the split and sampling tests
read only the DL19 files.
"""

from __future__ import annotations

import json

import pytest

from dear_local_convert.standins import train_ranker as tr
from optional import needs

pytestmark = [needs("torch", "peft"), pytest.mark.usefixtures("session_env")]


def _tiny(out, base) -> list[str]:
    # BM25 breaks the ties, so the run needs no teacher model (the train extra is not in dev)
    return [
        "--out", str(out), "--base", str(base), "--steps", "3", "--max-queries", "2", "--teacher", "bm25",
        "--min-window", "2", "--max-window", "3", "--warmup", "1", "--log-every", "1", "--foreign", "0.5",
    ]


def test_training_runs_end_to_end_and_its_losses_repeat(standin_dir, tmp_path, capsys):
    assert tr.main(_tiny(tmp_path / "a", standin_dir)) == 0
    first = json.loads((tmp_path / "a" / "training.json").read_text())
    printed = capsys.readouterr().out
    assert "step     1/3  loss" in printed
    assert tr.main(_tiny(tmp_path / "b", standin_dir)) == 0
    second = json.loads((tmp_path / "b" / "training.json").read_text())

    assert len(first["losses"]) == 3
    assert all(loss > 0 for loss in first["losses"])
    assert first["losses"] == second["losses"]
    # the adapter is what PEFT writes and reads back, stored in bf16, with no leftover .partial
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "a" / name).is_file()
    assert not (tmp_path / "a.partial").exists()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a" / "adapter_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    assert first["data_sha256"]["dl19/qrels.dl19-passage.txt"] == (
        "8a1f10d550732e4cd91d7fc49846a3784de4040972f583e69285a88f3c5fee92"
    )


def test_the_trained_answer_is_the_constrained_decoders_own_tokens(standin_dir):
    """The target continues the prompt exactly as decoding does: what the decoder wrote, read back as a target, is the same ids."""
    from dear_local.contract.constraint import PermutationConstraint, TokenIndex
    from dear_local.engine import rank_window
    from dear_local.store import get_manifest
    from dear_local_convert.slices import load_slice
    from dear_local_convert.transformers_backend.backend import TransformersBackend

    profile = get_manifest(tr.STANDIN_MODEL).profile
    backend = TransformersBackend(standin_dir, device="cpu", dtype="fp32")
    q = load_slice("noveleval", queries=1, passages=12).queries[0]
    res = rank_window(backend, profile, q.text, list(q.passages))
    constraint = PermutationConstraint(TokenIndex.from_backend(backend), 12, profile.tmpl.id_base)
    ids, ranks = tr.answer_ids(backend, constraint, tuple(res.order), profile.tmpl.id_base)
    assert ids == res.output_ids
    assert ranks[0] == 0 and ranks[-1] == 11
    window = tr.Window(q.qid, q.text, q.passages, tuple(res.order))
    x, labels, weights = tr.encode_window(backend, profile, lambda n: constraint, window, 3.0)
    assert x[: len(res.prompt_ids)] == res.prompt_ids
    assert x[len(res.prompt_ids):-1] == res.output_ids
    assert backend.detokenize([x[-1]]) == "<|im_end|>"
    assert labels[: len(res.prompt_ids)] == [-100] * len(res.prompt_ids)
    assert weights[len(res.prompt_ids)] == 3.0 and weights[-1] == 1.0


def test_the_split_keeps_dev_and_holdout_queries_out_of_training():
    from dear_local_convert.slices import load_slice

    dl19 = load_slice("dl19-top100")
    train = {q.qid for q in tr.training_queries(dl19)}
    assert len(tr.DEV_QIDS) >= 10
    assert len(train) == 43 - len(tr.DEV_QIDS) - len(tr.HOLDOUT_QIDS)
    assert not train & (set(tr.DEV_QIDS) | set(tr.HOLDOUT_QIDS))
    assert {q.qid for q in dl19.queries} >= set(tr.DEV_QIDS) | set(tr.HOLDOUT_QIDS)


def test_windows_mix_grades_and_order_by_grade_then_teacher():
    from dear_local_convert.slices import load_slice

    dl19 = load_slice("dl19-top100")
    queries = tr.training_queries(dl19)[:3]
    rank_of = {q.qid: {d: i for i, d in enumerate(q.docids)} for q in queries}
    position = {p: i for q in queries for i, p in enumerate(q.passages)}
    calls = []

    def teacher(query, passages):  # BM25's order as the teacher
        calls.append(query)
        return [-position[p] for p in passages]

    cfg = tr.TrainConfig(steps=12, min_window=5, max_window=9)
    windows = tr.sample_windows(queries, dl19.qrels, teacher, cfg)
    assert windows == tr.sample_windows(queries, dl19.qrels, teacher, cfg)  # seeded, fixed order
    by_text = {q.qid: dict(zip(q.passages, q.docids)) for q in queries}
    for w in windows:
        assert 5 <= len(w.passages) <= 9 and sorted(w.order) == list(range(len(w.passages)))
        grades = [dl19.qrels[w.qid].get(by_text[w.qid][w.passages[i]], 0) for i in w.order]
        assert grades == sorted(grades, reverse=True) and grades[0] >= 1 and grades[-1] == 0
        for a, b in zip(w.order, w.order[1:]):
            ga = dl19.qrels[w.qid].get(by_text[w.qid][w.passages[a]], 0)
            gb = dl19.qrels[w.qid].get(by_text[w.qid][w.passages[b]], 0)
            if ga == gb:
                assert rank_of[w.qid][by_text[w.qid][w.passages[a]]] < rank_of[w.qid][by_text[w.qid][w.passages[b]]]
    for w in windows:  # the teacher's score travels with each passage, in prompt order
        assert w.teacher == tuple(float(-position[p]) for p in w.passages)
    assert len(calls) == 2 * 3  # once per query and run
    assert windows != tr.sample_windows(queries, dl19.qrels, teacher, tr.TrainConfig(steps=12, min_window=5, max_window=9, seed=1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--min-window", "1"], "--min-window"),
        (["--max-window", "21"], "--max-window <= 20"),
        (["--distill-weight", "-1"], "must not be negative"),
        (["--layers", "-2"], "must not be negative"),
    ],
)
def test_bad_settings_fail_with_one_line(tmp_path, capsys, args, message):
    assert tr.main(["--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_a_missing_data_directory_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEAR_LOCAL_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("DEAR_LOCAL_OFFLINE", "1")
    assert tr.main(["--out", str(tmp_path / "x"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_foreign_passages_come_from_other_queries_and_rank_below_every_own_passage():
    from dear_local_convert.slices import load_slice

    dl19 = load_slice("dl19-top100")
    queries = tr.training_queries(dl19)[:4]
    own = {q.qid: set(q.passages) for q in queries}
    teacher = tr.bm25_teacher(queries)
    windows = tr.sample_windows(queries, dl19.qrels, teacher, tr.TrainConfig(steps=20, min_window=6, max_window=12, foreign=0.6))
    n_foreign = 0
    for w in windows:
        is_own = [p in own[w.qid] for p in w.passages]
        ranked = [is_own[i] for i in w.order]
        n_foreign += ranked.count(False)
        # every passage of another query comes after all of this query's own passages
        assert ranked == sorted(ranked, reverse=True)
        assert ranked[0]
    assert n_foreign > 0


def test_training_id_scores_are_the_first_token_decoders_own(standin_dir):
    """The ids' scores training optimises are the probabilities ``--decoding first-token`` ranks by, on windows whose ids share tokens."""
    import numpy as np
    import torch

    from dear_local.decoding.first_token import first_token
    from dear_local.engine import prompt_ids
    from dear_local.store import get_manifest
    from dear_local_convert.slices import load_slice
    from dear_local_convert.standins.id_scores import IdTree, id_logprobs, order_by
    from dear_local_convert.transformers_backend.backend import TransformersBackend

    profile = get_manifest(tr.STANDIN_MODEL).profile
    backend = TransformersBackend(standin_dir, device="cpu", dtype="fp32")
    for qi, n in ((2, 20), (3, 13), (4, 7)):  # ids 10..20 share "1" and "2" with SmolLM2's digits
        q = load_slice("noveleval", queries=qi + 1, passages=n).queries[qi]
        ids = prompt_ids(backend, profile, q.text, list(q.passages))
        gen, probs = first_token(backend, profile.tmpl, ids, n)
        tree = IdTree.build(backend, profile.tmpl, n)
        with torch.no_grad():
            x = torch.tensor([ids + list(tree.prefix_ids)])
            out = backend.model(input_ids=x, logits_to_keep=1, use_cache=True)
            logp = id_logprobs(backend.model, tree, out.logits[0, -1], out.past_key_values, x.shape[1])
            assert out.past_key_values.get_seq_length() == x.shape[1]  # the extra steps are cropped away
        assert np.allclose(np.exp(logp.numpy()), probs, atol=1e-4), (n, probs)
        assert abs(float(torch.exp(logp).sum()) - 1.0) < 1e-5
        if min(abs(a - b) for i, a in enumerate(probs) for b in probs[i + 1:]) > 1e-3:
            assert gen.text.startswith(f"[{order_by(logp)[0] + 1}]")


@pytest.mark.parametrize("seed", range(25))
def test_the_first_token_loss_prefers_every_better_graded_id_and_ignores_ties(seed):
    """Raising a better-graded id's score over a worse one lowers the loss; swapping two ids of one grade changes nothing."""
    import random

    import torch

    rng = random.Random(seed)
    n = rng.randint(2, 20)
    grades = [rng.choice([-1, 0, 0, 1, 2, 3]) for _ in range(n)]
    if len(set(grades)) < 2:
        grades[0], grades[1] = 2, 0
    logp = torch.log_softmax(torch.tensor([rng.gauss(0, 2) for _ in range(n)]), 0)
    cfg = tr.TrainConfig(objective="first-token")
    base = float(tr.first_token_loss(logp, tuple(grades), cfg))
    a = max(range(n), key=lambda k: grades[k])
    b = min(range(n), key=lambda k: grades[k])
    moved = logp.clone()
    moved[a], moved[b] = logp[a] + 0.5, logp[b] - 0.5
    assert float(tr.first_token_loss(moved, tuple(grades), cfg)) < base
    same = [k for k in range(n) if grades[k] == grades[a] and k != a]
    if same:
        swapped = logp.clone()
        swapped[a], swapped[same[0]] = logp[same[0]], logp[a]
        assert abs(float(tr.first_token_loss(swapped, tuple(grades), cfg)) - base) < 1e-5


@pytest.mark.parametrize("seed", range(25))
def test_the_distillation_term_is_smallest_at_the_target_distribution(seed):
    """With only the ListNet term, the loss is least when the student's id distribution is the target
    softmax(grade_scale * grade + z(teacher)); any other distribution costs more, and a better-graded id's
    target weight is higher whatever the teacher says within a grade spread of one standard deviation."""
    import random

    import torch

    rng = random.Random(seed)
    n = rng.randint(2, 20)
    grades = tuple(rng.choice([-1, 0, 0, 1, 2, 3]) for _ in range(n))
    teacher = tuple(rng.uniform(-0.2, 0.9) for _ in range(n))
    cfg = tr.TrainConfig(objective="first-token", pair_weight=0.0, top_weight=0.0, distill_weight=1.0)
    g = torch.tensor(grades, dtype=torch.float32)
    t = torch.tensor(teacher)
    z = (t - t.mean()) / t.std() if n > 1 else t * 0
    best = torch.log_softmax(cfg.grade_scale * g + z, 0)
    at_target = float(tr.first_token_loss(best, grades, cfg, teacher))
    for _ in range(5):
        other = torch.log_softmax(best + torch.tensor([rng.gauss(0, 1) for _ in range(n)]), 0)
        assert float(tr.first_token_loss(other, grades, cfg, teacher)) > at_target - 1e-6
    # without teacher scores the term is absent
    assert float(tr.first_token_loss(best, grades, cfg)) == 0.0


def test_the_first_token_objective_trains_end_to_end_under_bf16_autocast(standin_dir, tmp_path):
    """The FIRST objective's training step, with distillation and LoRA on the last blocks only, runs on
    windows whose ids share a first digit, under bf16 autocast."""
    args = _tiny(tmp_path / "f", standin_dir)
    args[args.index("--min-window") + 1], args[args.index("--max-window") + 1] = "10", "12"
    assert tr.main([*args, "--steps", "2", "--objective", "first-token", "--autocast",
                    "--distill-weight", "1", "--layers", "2"]) == 0
    record = json.loads((tmp_path / "f" / "training.json").read_text())
    assert record["config"]["objective"] == "first-token" and record["config"]["autocast"] is True
    assert len(record["losses"]) == 2 and all(0 < v < 100 for v in record["losses"])
    # LoRA weights only on the last two of the stand-in's 30 blocks
    from safetensors import safe_open

    with safe_open(str(tmp_path / "f" / "adapter_model.safetensors"), "pt") as f:
        blocks = {int(k.split(".layers.")[1].split(".")[0]) for k in f.keys()}
    assert blocks == {28, 29}
