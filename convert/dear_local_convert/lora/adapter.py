"""A PEFT LoRA adapter on disk: its config and weights, checked before anything is written.

An adapter directory is what PEFT's ``save_pretrained`` writes: ``adapter_config.json``
and ``adapter_model.safetensors``. The config decides which modules are adapted
(``target_modules``, ``exclude_modules``, ``layers_to_transform``, matched by PEFT's own
rules) and the scale of each: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA
(``use_rslora``), where ``rank_pattern`` and ``alpha_pattern`` may change r and alpha
per module. The adapted weight is ``W + scale · B·A`` with ``A`` of shape (r, in) and
``B`` of shape (out, r).

Only plain LoRA on the attention and MLP projections of a Llama model is supported, plus
one whole module: the ``score`` head of a sequence-classification adapter
(``task_type: SEQ_CLS``, which PEFT saves through ``modules_to_save``, as DeAR-P's
``-lora-v1`` adapters do). Merging such an adapter makes a pointwise ranker whatever the
base's architecture: PEFT loads the base with ``AutoModelForSequenceClassification`` and
replaces its head with the saved one. Everything else (DoRA, adapters on the embeddings
or on ``lm_head``, other ``modules_to_save``, trained biases, other PEFT methods) is
refused by name, and so is an adapter whose shapes do not fit the base model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from dear_local.errors import ConversionError, missing_extra
from dear_local.fileio import sha256_file
from dear_local.gguf_file import Keys

from dear_local_convert.safetensors_file import SourceTensor, scan_file

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
# The Linear layers of a Llama block a LoRA pair can be folded into.
PROJECTION = re.compile(r"^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$")
EMBEDDINGS = "model.embed_tokens"
HEAD = "lm_head"
SCORE = "score"  # a SEQ_CLS adapter's saved head: base_model.model.score.weight, shape (1, n_embd)
# What PEFT puts in modules_to_save for task_type SEQ_CLS (the head names of every model family).
SEQ_CLS_SAVED = frozenset({"classifier", "score"})
PAIR = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.(?P<kind>weight|bias)$")
MERGE_ELSEWHERE = "merge it with PEFT (merge_and_unload, save_pretrained) and convert the merged checkpoint instead"

# Config settings that change the adapted weight beyond W + scale·B·A: (key, what it is).
UNSUPPORTED_SETTINGS = (
    ("use_dora", "DoRA (use_dora), whose magnitude vector rescales every merged column"),
    ("trainable_token_indices", "trainable_token_indices, trained rows of the embeddings"),
    ("lora_bias", "lora_bias, a trained bias on lora_B"),
    ("layer_replication", "layer_replication, which adds layers to the base"),
    ("target_parameters", "target_parameters, adapters on raw parameters"),
    ("alora_invocation_tokens", "aLoRA (alora_invocation_tokens), which is active only after its invocation tokens"),
    ("fan_in_fan_out", "fan_in_fan_out, transposed weights (GPT-2 style Conv1D)"),
)


@dataclass(frozen=True)
class LoraPair:
    """One adapted Linear layer: ``W`` (out, in) becomes ``W + scale · B·A``."""

    module: str  # Hugging Face module name, e.g. model.layers.0.self_attn.q_proj
    a: SourceTensor  # lora_A, shape (rank, in)
    b: SourceTensor  # lora_B, shape (out, rank)
    rank: int
    alpha: float
    scale: float  # alpha / rank, or alpha / sqrt(rank) with rsLoRA

    @property
    def weight_name(self) -> str:
        """The base checkpoint's tensor this pair adapts."""
        return f"{self.module}.weight"


@dataclass(frozen=True)
class Adapter:
    """A checked PEFT LoRA adapter: its pairs by base weight name, and what identifies it."""

    path: Path
    config: dict
    pairs: dict[str, LoraPair]  # keyed by base weight name (module + ".weight")
    sha256: str  # of adapter_model.safetensors
    repo: str | None = None
    revision: str | None = None
    score_head: SourceTensor | None = None  # a SEQ_CLS adapter's trained head, (1, n_embd); replaces the base's

    @property
    def pointwise(self) -> bool:
        """Whether merging makes a pointwise ranker (a SEQ_CLS adapter with its ``score`` head)."""
        return self.score_head is not None

    @property
    def base_model(self) -> str | None:
        """``base_model_name_or_path`` from the config: the model the adapter was trained on."""
        return self.config.get("base_model_name_or_path")

    @property
    def alpha(self) -> float:
        return float(self.config["lora_alpha"])

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def rslora(self) -> bool:
        return bool(self.config.get("use_rslora"))

    @property
    def dtype(self) -> str:
        """The safetensors dtype of the stored pairs (BF16, F16 or F32)."""
        return next(iter(self.pairs.values())).a.dtype

    @property
    def name(self) -> str:
        return self.repo.rstrip("/").split("/")[-1] if self.repo else self.path.name

    def check_base(self, weights: dict[str, tuple[int, ...]], base: str) -> None:
        """Refuse a base model the adapter does not fit.

        ``weights`` maps the base's Hugging Face weight names to their shapes (out, in);
        ``base`` names the base in messages. Every module the config targets must have a
        pair, and every pair must match its base weight's shape.

        Raises:
            ConversionError: a missing or misshapen module, naming the adapter's
                ``base_model_name_or_path``; a target on the embeddings or ``lm_head``.
        """
        trained_on = f"it was trained on {self.base_model}" if self.base_model else "its config names no base model"
        for name, pair in self.pairs.items():
            if name not in weights:
                raise ConversionError(
                    f"the adapter adapts {pair.module}, which {base} does not have ({trained_on}); "
                    "convert the base model the adapter was trained on"
                )
            out_in = tuple(weights[name])
            want = (pair.b.shape[0], pair.a.shape[1])
            if out_in != want:
                raise ConversionError(
                    f"the adapter does not fit {base}: {pair.module} is {list(out_in)} there but the adapter "
                    f"expects {list(want)} ({trained_on}); convert that model, or the adapter made for this base"
                )
        cfg = _target_config(self.config)
        for name in weights:
            module = name.removesuffix(".weight")
            if not name.endswith(".weight") or not _targeted(cfg, module):
                continue
            if module in (EMBEDDINGS, HEAD):
                raise ConversionError(_refused_module(module))
            if PROJECTION.match(module) and name not in self.pairs:
                raise ConversionError(
                    f"adapter_config.json targets {module} but {WEIGHTS} holds no lora_A/lora_B for it; "
                    "the adapter is incomplete, download or save it again"
                )


def _target_config(config: dict) -> SimpleNamespace:
    """The fields PEFT's target matching reads, as attributes."""
    keys = ("target_modules", "exclude_modules", "modules_to_save", "target_parameters",
            "layers_to_transform", "layers_pattern")  # fmt: skip
    return SimpleNamespace(**{k: config.get(k) for k in keys})


def _targeted(cfg: SimpleNamespace, module: str) -> bool:
    """PEFT's own rule for whether ``module`` is adapted (exact name, suffix, regex, layers)."""
    try:
        from peft.tuners.tuners_utils import check_target_module_exists
    except ImportError:
        raise missing_extra("peft", "convert") from None
    if cfg.target_modules is None:
        return False
    found = check_target_module_exists(cfg, module)
    return bool(found) and type(found).__name__ != "_ExcludedModule"


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup for one module."""
    if not patterns:
        return default
    from peft.utils.other import get_pattern_key

    return patterns.get(get_pattern_key(list(patterns), module), default)


def _refused_module(module: str) -> str:
    what = "the token embeddings (model.embed_tokens)" if module == EMBEDDINGS else "the output layer (lm_head)"
    return f"an adapter on {what} is not supported; dear-local folds LoRA pairs on attention and MLP projections only: {MERGE_ELSEWHERE}"


def read_config(path: Path) -> dict:
    """``adapter_config.json``, refused unless it describes plain LoRA.

    Raises:
        ConversionError: a missing or corrupt file, another PEFT method, or a setting
            from ``UNSUPPORTED_SETTINGS``, naming it.
    """
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise ConversionError(
            f"{path} has no {CONFIG}; pass the directory PEFT's save_pretrained wrote (or the adapter's HF repo id)"
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{cfg_path} is not valid JSON ({exc}); download or save the adapter again") from None
    kind = cfg.get("peft_type", "LORA")
    if str(kind).upper() != "LORA":
        raise ConversionError(f"{CONFIG} says peft_type {kind!r}; dear-local supports plain LoRA adapters (peft_type LORA) only")
    for key, what in UNSUPPORTED_SETTINGS:
        if cfg.get(key):
            raise ConversionError(f"{what} is not supported ({key}: {cfg[key]!r} in {CONFIG}): {MERGE_ELSEWHERE}")
    _check_saved_modules(cfg)
    bias = cfg.get("bias", "none")
    if bias not in (None, "none"):
        raise ConversionError(f"trained biases (bias: {bias!r} in {CONFIG}) are not supported: {MERGE_ELSEWHERE}")
    try:
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"{CONFIG} lacks a usable {exc}; it is not a LoRA adapter config") from None
    if r < 1 or not alpha > 0:
        raise ConversionError(f"{CONFIG} has r {r} and lora_alpha {alpha}; both must be positive")
    for module in (EMBEDDINGS, HEAD):
        if _targeted(_target_config(cfg), module):
            raise ConversionError(_refused_module(module))
    return cfg


def _check_saved_modules(cfg: dict) -> None:
    """``modules_to_save`` may only be PEFT's SEQ_CLS default (the classification head).

    Raises:
        ConversionError: whole modules other than ``score``/``classifier``, or a head saved
            by an adapter whose ``task_type`` is not ``SEQ_CLS``.
    """
    saved = cfg.get("modules_to_save")
    if not saved:
        return
    what = "modules_to_save, whole modules stored beside the LoRA pairs"
    names = [saved] if isinstance(saved, str) else list(saved) if isinstance(saved, list) else [saved]
    if not all(isinstance(n, str) for n in names) or not set(names) <= SEQ_CLS_SAVED:
        raise ConversionError(
            f"{what}, is not supported beyond a classification head (modules_to_save: {saved!r} in {CONFIG}): {MERGE_ELSEWHERE}"
        )
    if str(cfg.get("task_type", "")).upper() != "SEQ_CLS":
        raise ConversionError(
            f"{CONFIG} saves the classification head (modules_to_save: {saved!r}) but its task_type is "
            f"{cfg.get('task_type')!r}, not 'SEQ_CLS'; the config does not describe a pointwise ranker adapter"
        )


def read_adapter(path: str | Path, *, repo: str | None = None, revision: str | None = None) -> Adapter:
    """Read and check the PEFT LoRA adapter in directory ``path``.

    ``repo``/``revision`` are recorded as provenance. Returns the :class:`Adapter`
    with one :class:`LoraPair` per adapted projection.

    Raises:
        ConversionError: anything not supported (see the module docstring), a missing,
            pickled or corrupt weights file, a pair with one half missing or mismatched
            ranks, or a pair on a module the config does not target.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConversionError(f"LoRA adapter {path} is not a directory; pass an adapter directory or its HF repo id")
    cfg = read_config(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        pickled = sorted(p.name for p in path.glob("*.bin"))
        if pickled:
            raise ConversionError(
                f"{path} holds only pickled adapter weights ({', '.join(pickled)}); dear-local refuses them because "
                "loading a pickle can run arbitrary code. Save the adapter with safetensors (PEFT's default)"
            )
        raise ConversionError(f"{path} has no {WEIGHTS}; download or save the adapter again")
    halves: dict[str, dict[str, SourceTensor]] = {}
    score_head = None
    seq_cls = bool(cfg.get("modules_to_save"))  # _check_saved_modules allowed only SEQ_CLS's head
    for t in scan_file(weights, "adapter"):
        name = t.name.removeprefix(PREFIX)
        if seq_cls and name == f"{SCORE}.weight":
            score_head = t
            continue
        m = PAIR.match(name)
        if "lora_magnitude_vector" in name:
            raise ConversionError(f"DoRA is not supported ({WEIGHTS} holds {t.name}): {MERGE_ELSEWHERE}")
        if "lora_embedding_" in name:
            raise ConversionError(_refused_module(EMBEDDINGS) + f" ({WEIGHTS} holds {t.name})")
        if m is None or m["kind"] == "bias":
            what = "a module saved whole (modules_to_save)" if "modules_to_save" in name or m is None else "a trained bias"
            raise ConversionError(f"{WEIGHTS} holds {t.name}, {what}, which is not supported: {MERGE_ELSEWHERE}")
        module = m["module"]
        if module in (EMBEDDINGS, HEAD):
            raise ConversionError(_refused_module(module))
        if not PROJECTION.match(module):
            raise ConversionError(
                f"{WEIGHTS} adapts {module}, which is not an attention or MLP projection of a Llama model; "
                "only q/k/v/o_proj and gate/up/down_proj adapters are supported"
            )
        if t.dtype not in ("BF16", "F16", "F32") or len(t.shape) != 2:
            raise ConversionError(f"{t.name} is {t.dtype} {list(t.shape)}; LoRA pairs must be 2-D BF16, F16 or F32")
        halves.setdefault(module, {})[m["ab"]] = t
    if not halves:
        raise ConversionError(f"{WEIGHTS} holds no LoRA pairs; it is not a LoRA adapter")
    if seq_cls and score_head is None:
        raise ConversionError(
            f"{CONFIG} is a SEQ_CLS adapter but {WEIGHTS} holds no {SCORE}.weight (the trained head); "
            "the adapter is incomplete or not for a Llama model, save it again"
        )
    if score_head is not None and (score_head.dtype not in ("BF16", "F16", "F32") or len(score_head.shape) != 2
                                   or score_head.shape[0] != 1):
        raise ConversionError(
            f"{score_head.name} is {score_head.dtype} {list(score_head.shape)}; a pointwise "
            "ranker's head must be one 2-D BF16, F16 or F32 row (num_labels=1)"
        )
    targets = _target_config(cfg)
    pairs = {}
    for module, ab in sorted(halves.items()):
        if set(ab) != {"A", "B"}:
            raise ConversionError(f"{WEIGHTS} has lora_{''.join(ab)} but not its other half for {module}; save the adapter again")
        a, b = ab["A"], ab["B"]
        if a.shape[0] != b.shape[1]:
            raise ConversionError(f"{module}: lora_A has rank {a.shape[0]} but lora_B has {b.shape[1]}; the adapter is corrupt")
        if not _targeted(targets, module):
            raise ConversionError(
                f"{WEIGHTS} adapts {module}, which target_modules in {CONFIG} does not name; the config does not "
                "belong to these weights"
            )
        rank = int(_pattern_value(cfg.get("rank_pattern"), module, cfg["r"]))
        if rank != a.shape[0]:
            raise ConversionError(
                f"{module}: {CONFIG} gives rank {rank} but lora_A has {a.shape[0]} rows; the config does not "
                "belong to these weights"
            )
        alpha = float(_pattern_value(cfg.get("alpha_pattern"), module, cfg["lora_alpha"]))
        scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
        pairs[f"{module}.weight"] = LoraPair(module, a, b, rank, alpha, scale)
    return Adapter(path, cfg, pairs, sha256_file(weights), repo=repo, revision=revision, score_head=score_head)


def add_lora_provenance(w, adapter) -> None:
    """Record which adapter was merged (repo, revision, sha256, the base it names)."""
    w.add_string(Keys.LORA_SHA256, adapter.sha256)
    if adapter.repo:
        w.add_string(Keys.LORA_REPO, adapter.repo)
    if adapter.revision:
        w.add_string(Keys.LORA_REVISION, adapter.revision)
    if adapter.base_model:
        w.add_string(Keys.LORA_BASE_MODEL, adapter.base_model)
