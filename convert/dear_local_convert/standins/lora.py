"""Stand-in LoRA adapters: random-weight PEFT adapters on the stand-in checkpoints.

The real DeAR adapter (``abdoelsayed/dear-8b-reranker-listwise-lora-v1``, rank 16,
alpha 32 on Llama-3.1-8B-Instruct) cannot be downloaded on every machine. These
adapters are made by PEFT itself (``get_peft_model`` with random A and B, then
``save_pretrained``), so their files are exactly what PEFT writes for a real one;
only the numbers are random. Both halves are random (PEFT's default leaves B at
zero, which would make every adapter a no-op). With ``task="SEQ_CLS"`` the adapter is a
pointwise ranker's, shaped like DeAR-P's ``-lora-v1``: PEFT saves the one-label ``score``
head whole beside the pairs (``modules_to_save``), and that head is random too.
"""

from __future__ import annotations

from pathlib import Path

from dear_local.errors import missing_extra
from dear_local.fileio import atomic_dir

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def random_lora(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    r: int = 16,
    alpha: float = 32,
    target_modules=ALL_PROJECTIONS,
    use_rslora: bool = False,
    seed: int = 0,
    dtype: str = "bf16",
    base_model_name: str | None = None,
    task: str = "CAUSAL_LM",
    **config,
) -> Path:
    """Make a random-weight LoRA adapter for the checkpoint in ``base_dir`` and save it to ``out_dir``.

    ``target_modules`` (names or a regex, as PEFT takes them), ``r``, ``alpha`` and
    ``use_rslora`` go to ``peft.LoraConfig``, with any other ``config`` fields
    (``rank_pattern``, ``alpha_pattern``, ``layers_to_transform``, ``use_dora``, ...).
    ``dtype`` (``bf16`` or ``fp32``) is how the weights are stored.
    ``base_model_name`` is recorded as ``base_model_name_or_path`` (default: ``base_dir``).
    ``task`` is PEFT's ``task_type``: ``CAUSAL_LM``, or ``SEQ_CLS`` for a pointwise ranker's
    adapter (the base is loaded as a one-label sequence classifier).
    B gets values of the same size as A, so the adapter changes the model's logits
    clearly. Returns ``out_dir``, written through ``<out_dir>.partial``.
    """
    try:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    except ImportError as exc:
        raise missing_extra(exc.name or "peft", "convert") from exc

    if task not in ("CAUSAL_LM", "SEQ_CLS"):
        raise ValueError(f"task must be CAUSAL_LM or SEQ_CLS, not {task!r}")
    torch.manual_seed(seed)
    if task == "SEQ_CLS":
        model = AutoModelForSequenceClassification.from_pretrained(base_dir, dtype=torch.float32, num_labels=1)
    else:
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(target_modules) if not isinstance(target_modules, str) else target_modules,
        use_rslora=use_rslora, init_lora_weights=False, lora_dropout=0.0, task_type=task, **config,
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name or ".modules_to_save." in name:
                p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5)
    peft_model.peft_config["default"].base_model_name_or_path = base_model_name or str(base_dir)
    if dtype == "bf16":
        peft_model.to(torch.bfloat16)
    with atomic_dir(out_dir) as tmp:
        peft_model.save_pretrained(tmp, save_embedding_layers=False)
    return Path(out_dir)
