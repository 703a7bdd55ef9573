"""The ranking stand-in's data split: which DL19 queries are trained on, and the slices it is measured on.

Shared by the training script (``train_ranker``) and the measuring script (``eval_ranker``),
so neither imports the other, with how both end (:func:`script_exit`).
"""

from __future__ import annotations

import sys
from typing import Callable

from dear_local.errors import DearLocalError, UserInputError

# The DL19 queries never trained on. Chosen once with random.Random(23).shuffle over the
# sorted qids (first 10: dev, next 3: a second held-out check), then frozen here.
DEV_QIDS = ("156493", "182539", "207786", "359349", "451602", "527433", "962179", "1106007", "1112341", "1115776")
HOLDOUT_QIDS = ("87181", "915593", "1114819")
STANDIN_MODEL = "smollm2-135m-instruct"
SLICES = ("dl19-dev", "dl19-holdout", "noveleval")


def eval_slice(name: str):
    """The queries of eval slice ``name``, 20 candidates each, as a loaded ``Slice``.

    - ``dl19-dev``: the DL19 queries of :data:`DEV_QIDS`, BM25 top-20;
    - ``dl19-holdout``: the further held-out queries of :data:`HOLDOUT_QIDS`;
    - ``noveleval``: all 21 NovelEval queries x 20 passages, never trained on.

    Raises:
        UserInputError: an unknown name.
        DataError: the data files are missing or wrong.
    """
    from dataclasses import replace

    from dear_local_convert.slices import load_slice

    if name == "noveleval":
        return load_slice("noveleval")
    if name not in SLICES:
        raise UserInputError(f"unknown slice {name!r}; choose one of: {', '.join(SLICES)}")
    keep = set(DEV_QIDS if name == "dl19-dev" else HOLDOUT_QIDS)
    full = load_slice("dl19-top20")
    queries = tuple(q for q in full.queries if q.qid in keep)
    return replace(full, name=name, queries=queries, qrels={q.qid: dict(full.qrels[q.qid]) for q in queries})


def script_exit(work: Callable[[], object]) -> int:
    """Run a script's ``work`` and return its exit status: 0, or 2 after one ``error:`` line on stderr
    for a :class:`~dear_local.errors.DearLocalError`."""
    try:
        work()
    except DearLocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
