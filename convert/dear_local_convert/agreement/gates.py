"""Agreement gates: the one list of gate keys, how a report row is judged, and where gates come from.

A gate is ``KEY = VALUE`` in a model manifest's ``[gates]`` table (``models/*.toml``)
or a ``--gate KEY=VALUE`` override. Keys are the ``GATES`` below for a listwise model's check
and ``POINTWISE_GATES`` for a pointwise ranker's (DeAR-P); any other key is refused, in a
manifest and on the command line alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from dear_local.errors import UserInputError

from dear_local_convert.agreement.row import CheckRow


@dataclass(frozen=True)
class Gate:
    key: str
    value: Callable[[Any], float]  # the figure a report row (CheckRow or PointwiseRow) is judged on
    passes: Callable[[float, float], bool]  # (figure, threshold) -> ok
    failure: str  # sentence for a failure, with {v} and {g}


def _wrong_format_rate(row: CheckRow) -> float:
    return row.status_counts.get("wrong_format", 0) / (sum(row.status_counts.values()) or 1)


GATES: dict[str, Gate] = {
    g.key: g
    for g in (
        Gate("min_mean_kendall_tau", lambda r: r.mean_tau, lambda v, g: v >= g, "mean Kendall tau {v:.3f} < {g}"),
        Gate("min_exact_match", lambda r: r.exact_match_pct / 100, lambda v, g: v >= g, "exact match {v:.2f} < {g}"),
        Gate("max_delta_ndcg10", lambda r: -r.delta_ndcg10, lambda v, g: v <= g, "nDCG@10 drop {v:.4f} > {g}"),
        Gate("max_wrong_format_rate", _wrong_format_rate, lambda v, g: v <= g, "wrong_format rate {v:.2f} > {g}"),
    )
}
GATE_KEYS = tuple(GATES)

# A pointwise ranker's check (rows are agreement.pointwise.PointwiseRow): its scores against the reference's.
POINTWISE_GATES: dict[str, Gate] = {
    g.key: g
    for g in (
        Gate("min_mean_kendall_tau", lambda r: r.mean_tau, lambda v, g: v >= g, "mean Kendall tau {v:.3f} < {g}"),
        Gate("min_mean_spearman", lambda r: r.mean_spearman, lambda v, g: v >= g, "mean Spearman {v:.3f} < {g}"),
        Gate("min_top10_overlap", lambda r: r.top10_overlap, lambda v, g: v >= g, "top-10 overlap {v:.2f} < {g}"),
        Gate("max_delta_ndcg10", lambda r: -r.delta_ndcg10, lambda v, g: v <= g, "nDCG@10 drop {v:.4f} > {g}"),
        Gate("max_mean_abs_score_error", lambda r: r.mean_abs_error, lambda v, g: v <= g,
             "mean absolute score error {v:.4f} > {g}"),
    )
}
POINTWISE_GATE_KEYS = tuple(POINTWISE_GATES)
# A pointwise reference recorded from a checkpoint directory names no manifest: these apply then (the
# DeAR-P manifests' own [gates]).
DEFAULT_POINTWISE_GATES = {"min_mean_kendall_tau": 0.90, "min_top10_overlap": 0.80, "max_delta_ndcg10": 0.02}
ANY_GATE_KEYS = tuple(dict.fromkeys(GATE_KEYS + POINTWISE_GATE_KEYS))


def evaluate_gates(row, gates: dict, table: dict[str, Gate] = GATES) -> list[str]:
    """The gates ``row`` (one quant's report row) fails, as readable sentences; empty when it passes.

    ``gates`` maps gate keys (``table``'s, as :func:`check_gates` returns them) to thresholds;
    ``table`` is :data:`GATES` for a listwise check, :data:`POINTWISE_GATES` for a pointwise one.
    """
    failed = []
    for key, threshold in gates.items():
        gate = table[key]
        value = gate.value(row)
        if not gate.passes(value, threshold):
            failed.append(gate.failure.format(v=value, g=threshold))
    return failed


def check_gates(gates: dict, where: str, table: dict[str, Gate] = GATES) -> dict:
    """``gates`` with float thresholds, every key one of ``table``'s.

    Raises:
        UserInputError: an unknown key or a non-numeric value, naming ``where`` it came from.
    """
    out = {}
    for key, value in gates.items():
        if key not in table:
            kind = "a pointwise ranker's " if table is POINTWISE_GATES else ""
            raise UserInputError(f"{where}: unknown gate {key!r}; {kind}gates are: {', '.join(table)}")
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise UserInputError(f"{where}: gate {key} = {value!r} is not a number") from None
    return out


_ANY_GATE = {**GATES, **POINTWISE_GATES}


def parse_gate_overrides(items: list[str]) -> dict:
    """``["min_mean_kendall_tau=0.9", ...]`` (the CLI's ``--gate``) as a dict.

    Keys of either table pass here; the check then refuses one its kind of model has not.

    Raises:
        UserInputError: an item that is not ``KEY=VALUE`` with a known key and a number.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserInputError(f"--gate {item!r} is not KEY=VALUE with KEY one of: {', '.join(ANY_GATE_KEYS)}")
        out.update(check_gates({key.strip(): value.strip()}, f"--gate {item!r}", _ANY_GATE))
    return out


def manifest_gates(name: str | None) -> dict:
    """The ``[gates]`` table of the manifest named ``name``; empty for an unknown model or none."""
    if not name:
        return {}
    from dear_local.errors import UnknownModelError
    from dear_local.store import get_manifest

    try:
        manifest = get_manifest(name)
    except UnknownModelError:
        return {}
    table = POINTWISE_GATES if manifest.kind == "pointwise" else GATES
    return check_gates(manifest.gates, f"models/{name}.toml", table)
