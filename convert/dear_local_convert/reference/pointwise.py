"""The pointwise reference: a DeAR-P checkpoint's own scores in transformers, recorded once as a file.

The model card's path (``simple_rerank.py``): ``AutoModelForSequenceClassification`` with one
label, the tokenizer's text pair from the pointwise template (``dear-p``: ``"query: {q}"``,
``"document: {title} {passage}"``, ``truncation=True``, ``max_length=228``), padded on the right
with ``pad = eos``, the raw logit as the score. A SEQ_CLS LoRA adapter runs through PEFT on the
base (its ``score`` head replaces the base's).

The file is JSONL. Line 1 is a header (``format`` :data:`FORMAT`, model, device, dtype, library
versions, template, slice and its sha256); every other line is one query::

    {"type": "query", "qid": ..., "docids": [...], "scores": [...], "prompt_ids": [[...], ...],
     "order": [docid, ...]}

``scores[i]`` and ``prompt_ids[i]`` belong to ``docids[i]`` (the slice's first-stage order);
``order`` is the docids by score, best first (ties kept in first-stage order).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from dear_local import __version__
from dear_local.contract.pointwise import DEFAULT_POINTWISE_TEMPLATE, get_pointwise_template
from dear_local.errors import ReferenceError_, UserInputError, missing_extra
from dear_local.fileio import atomic_path, refuse_overwrite

FORMAT = "dear-local-pointwise-reference/1"
DEFAULT_BATCH = 8  # pairs per transformers forward
MAX_PAIR_IDS = 8192  # no pointwise template reads more per pair; longer ids in a file mean a damaged file


def order_by_score(docids: list[str], scores) -> list[str]:
    """``docids`` best first by ``scores``; equal scores keep their input order."""
    return [docids[i] for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]


def _load(checkpoint: Path, device: str, dtype: str, lora: Path | None):
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as exc:
        raise missing_extra(exc.name or "transformers", "convert") from None
    from dear_local_convert.transformers_backend.backend import DTYPES

    if dtype not in DTYPES:
        raise UserInputError(f"unknown dtype {dtype!r}; use one of: bf16, fp32, fp16")
    tok = AutoTokenizer.from_pretrained(checkpoint)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # simple_rerank.py: pad = eos
    tok.padding_side = "right"
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, dtype=getattr(torch, DTYPES[dtype]), num_labels=1
    )
    model.config.pad_token_id = tok.pad_token_id
    if lora is not None:
        try:
            from peft import PeftModel
        except ImportError:
            raise missing_extra("peft", "convert") from None
        # the pairs are injected into the model itself (and a SEQ_CLS adapter's head wraps its score), so
        # the classifier's own forward runs whatever task the adapter was saved for
        model = PeftModel.from_pretrained(model, str(lora)).get_base_model()
    return tok, model.to(device).eval()


def score_pairs(tok, model, template, query: str, passages: list[str], batch: int = DEFAULT_BATCH) -> tuple[list[float], list[list[int]]]:
    """Transformers' scores (float, one per passage, in order) and the ids each pair was read as."""
    import torch

    scores: list[float] = []
    ids: list[list[int]] = []
    for start in range(0, len(passages), batch):
        chunk = [template.texts(query, p) for p in passages[start:start + batch]]
        enc = tok([a for a, _ in chunk], [b for _, b in chunk], truncation=True, max_length=template.max_length,
                  padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**{k: v.to(model.device) for k, v in enc.items()}).logits
        scores += logits[:, 0].float().cpu().tolist()
        ids += [row[mask.bool()].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"])]
    return scores, ids


def write_pointwise_reference(
    checkpoint: str | Path,
    eval_slice,
    out: str | Path,
    *,
    device: str | None = None,
    dtype: str = "bf16",
    model_name: str | None = None,
    source_repo: str | None = None,
    revision: str | None = None,
    lora: str | Path | None = None,
    lora_repo: str | None = None,
    lora_revision: str | None = None,
    template: str = DEFAULT_POINTWISE_TEMPLATE,
    batch: int = DEFAULT_BATCH,
    force: bool = False,
) -> Path:
    """Score every (query, passage) of ``eval_slice`` with the checkpoint in transformers; write the file.

    ``checkpoint`` is a ``LlamaForSequenceClassification`` directory, or the base a SEQ_CLS
    ``lora`` adapter was trained on. ``device`` is cuda, cpu or auto; ``dtype`` bf16 (the
    reference), fp32 or fp16; ``batch`` pairs go into one forward, padded on the right.
    Returns ``out``, written atomically.

    Raises:
        UserInputError: ``out`` exists and ``force`` is not set; an unknown device, dtype or
            template; a ``lora`` adapter that is not a SEQ_CLS one.
        MissingExtraError: torch, transformers (or peft, with ``lora``) are not installed.
    """
    import torch
    import transformers

    from dear_local_convert.transformers_backend.backend import device_name, pick_device

    out = Path(out)
    refuse_overwrite(out, force)
    tmpl = get_pointwise_template(template)
    if not isinstance(batch, int) or batch < 1:
        raise UserInputError(f"the reference batch must be a positive number of pairs, not {batch!r}")
    model_info = {"name": model_name, "checkpoint": str(checkpoint), "repo": source_repo, "revision": revision}
    engine = {"torch": torch.__version__, "transformers": transformers.__version__}
    if lora is not None:
        import peft

        from dear_local_convert.lora.adapter import read_adapter

        from dear_local_convert.to_gguf.arch import is_pointwise, read_config

        adapter = read_adapter(lora, repo=lora_repo, revision=lora_revision)
        if not adapter.pointwise and not is_pointwise(read_config(Path(checkpoint))):
            raise UserInputError(
                f"{adapter.path} is not a SEQ_CLS adapter (it saves no score head) and {checkpoint} is not a "
                "sequence-classification checkpoint: there is no pointwise ranker to record; pass DeAR-P's kind "
                "of adapter, or a pointwise checkpoint"
            )
        engine["peft"] = peft.__version__
        model_info["lora"] = {"path": str(adapter.path), "repo": adapter.repo, "revision": adapter.revision,
                              "sha256": adapter.sha256, "base_model": adapter.base_model}
    if lora is None:
        from dear_local_convert.to_gguf.arch import is_pointwise, read_config

        if not is_pointwise(read_config(Path(checkpoint))):
            raise UserInputError(
                f"{checkpoint} is not a sequence-classification checkpoint, and no SEQ_CLS adapter was given: its "
                "score head would be random; pass a DeAR-P checkpoint, or its base with lora= the adapter"
            )
    dev = pick_device(device)
    tok, model = _load(Path(checkpoint), dev, dtype, Path(lora) if lora is not None else None)
    header = {
        "type": "header",
        "format": FORMAT,
        "kind": "pointwise",
        "model": model_info,
        "device": dev,
        "device_name": device_name(dev),
        "dtype": dtype,
        **engine,
        "template": tmpl.name,
        "batch": batch,
        "slice": {"name": eval_slice.name, "sha256": eval_slice.sha256, "queries": len(eval_slice.queries),
                  "passages": eval_slice.passages_per_query},
        "dear_local": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    from dear_local.progress import bar

    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        with bar(total=len(eval_slice.queries), desc="pointwise reference", unit="query") as pbar:
            for q in eval_slice.queries:
                scores, ids = score_pairs(tok, model, tmpl, q.text, list(q.passages), batch)
                docids = list(q.docids)
                f.write(json.dumps({"type": "query", "qid": q.qid, "docids": docids, "scores": scores,
                                    "prompt_ids": ids, "order": order_by_score(docids, scores)}) + "\n")
                pbar.update(1)
    return out


def read_pointwise_reference(path: str | Path) -> tuple[dict, list[dict]]:
    """Load a pointwise reference file; refuse a corrupt, incomplete or foreign one with a clear message.

    Returns ``(header, queries)``.

    Raises:
        ReferenceError_: a missing file, a line that is not JSON, another format, a query count
            that is not the header's, or a query whose lists do not line up.
    """
    path = Path(path)
    redo = "recreate it with `dear-local reference`"
    if not path.is_file():
        raise ReferenceError_(f"reference file {path} does not exist; create it with `dear-local reference`")
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if line.strip()]
    except json.JSONDecodeError:
        raise ReferenceError_(f"{path} is corrupt (a line is not JSON); {redo}") from None
    if not rows or not isinstance(rows[0], dict) or rows[0].get("format") != FORMAT:
        raise ReferenceError_(f"{path} is not a dear-local pointwise reference file ({FORMAT}); {redo}")
    header, queries = rows[0], rows[1:]
    sl = header.get("slice")
    fields_ok = (isinstance(sl, dict) and isinstance(sl.get("name"), str) and isinstance(sl.get("sha256"), str)
                 and isinstance(sl.get("queries"), int) and isinstance(sl.get("passages"), int)
                 and isinstance(header.get("model"), dict) and isinstance(header.get("template"), str)
                 and all(isinstance(header.get(k), str) for k in ("dtype", "device_name")))
    if not fields_ok:
        raise ReferenceError_(f"{path} has a damaged header (slice, model, template, dtype or device missing); {redo}")
    if len(queries) != sl["queries"]:
        raise ReferenceError_(
            f"{path} is incomplete: the header promises {sl['queries']} queries but it "
            f"holds {len(queries)}; {redo}"
        )
    for q in queries:
        ok = (isinstance(q, dict) and q.get("type") == "query" and isinstance(q.get("qid"), str)
              and isinstance(q.get("docids"), list) and isinstance(q.get("scores"), list)
              and isinstance(q.get("prompt_ids"), list) and isinstance(q.get("order"), list)
              and len(q["docids"]) == len(q["scores"]) == len(q["prompt_ids"])
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in q["scores"])
              and all(isinstance(ids, list) and 0 < len(ids) <= MAX_PAIR_IDS and all(type(i) is int and i >= 0 for i in ids)
                      for ids in q["prompt_ids"])
              and sorted(map(str, q["order"])) == sorted(map(str, q["docids"])))
        if not ok:
            raise ReferenceError_(f"{path} is corrupt (a query's docids, scores, prompt ids and order do not line "
                                  f"up); {redo}")
    if len({q["qid"] for q in queries}) != len(queries):
        raise ReferenceError_(f"{path} is corrupt (a query id repeats); {redo}")
    return header, queries
