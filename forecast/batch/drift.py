"""Month-over-month drift: what changed between two runs (pure functions on their tables and models).

The batch compares each run with the previous finished run in its runs root and records the result in
``manifest.json`` under ``drift`` (keys documented in docs/operations.md, "Drift"): parameter changes with their
standard errors, total and per-segment CLV change, value-tier transitions, new and lapsed customers,
and warnings for large shifts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecast.config import DriftConfig, RunConfig
from forecast.value.segments import ALL, segmentation_name

NEW = "new"
MISSING = "missing"


def _float(value: Any) -> float | None:
    """A finite float, or None (for JSON)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def relative_change(previous: float, current: float) -> float | None:
    """(current - previous) / |previous|; None when previous is 0."""
    return (current - previous) / abs(previous) if previous != 0 else None


def change_z(previous: float, current: float, se_previous: float | None, se_current: float | None) -> float | None:
    """z statistic of a parameter change, (current - previous) / sqrt(se_previous^2 + se_current^2).

    The two fits share most of their data, so they are positively correlated and the true standard
    error of the change is smaller than this one: the z is conservative (it understates real shifts).
    Returns None when a standard error is missing or both are 0.
    """
    if se_previous is None or se_current is None:
        return None
    scale = math.sqrt(se_previous**2 + se_current**2)
    return (current - previous) / scale if scale > 0 else None


def parameter_drift(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Compare the parameters of two fits of a model (``to_dict`` documents of the estimators).

    Returns
    -------
    dict
        ``model``, ``previous_model``, ``comparable`` (same model), and ``params``: per parameter
        previous, current, change, relative_change, se_previous, se_current and z (None when not comparable).
    """
    comparable = previous.get("name") == current.get("name")
    params: dict[str, dict[str, float | None]] = {}
    if comparable:
        se_before = previous.get("standard_errors") or {}
        se_now = current.get("standard_errors") or {}
        for name, value in current["params"].items():
            before = float(previous["params"][name])
            now = float(value)
            params[name] = {
                "previous": before,
                "current": now,
                "change": now - before,
                "relative_change": _float(relative_change(before, now)),
                "se_previous": _float(se_before.get(name)),
                "se_current": _float(se_now.get(name)),
                "z": _float(change_z(before, now, _float(se_before.get(name)), _float(se_now.get(name)))),
            }
    return {
        "model": current.get("name"),
        "previous_model": previous.get("name"),
        "comparable": comparable,
        "params": params,
    }


#: The per-customer columns whose totals drift compares.
DRIFT_TOTALS = ("clv", "clv_heuristic", "expected_purchases")


def drift_segmentations(config: RunConfig) -> list[str]:
    """The per-customer columns drift totals CLV by: the value tier and the log's segment columns."""
    return ["segment", *config.data.segment_columns]


def drift_columns(segmentations: list[str]) -> list[str]:
    """The per-customer columns drift reads of a run: the id, the totalled columns, p_alive and ``segmentations``
    (the value tier ``segment`` among them)."""
    return list(dict.fromkeys(["customer_id", *DRIFT_TOTALS, "p_alive", "segment", *segmentations]))


def run_totals(customers: pd.DataFrame) -> dict[str, float]:
    """A run's customers and the totals of ``DRIFT_TOTALS``, from its per-customer table."""
    return {"customers": len(customers), **{column: float(customers[column].sum()) for column in DRIFT_TOTALS}}


def total_drift(previous: dict[str, float], current: dict[str, float]) -> dict[str, Any]:
    """Compare two runs' totals (``run_totals``): customers, clv, clv_heuristic, expected_purchases.

    Returns
    -------
    dict
        Per quantity: previous, current, change, relative_change (customers as integers, last).
    """
    totals: dict[str, Any] = {}
    for column in (*DRIFT_TOTALS, "customers"):
        before, now = previous[column], current[column]
        if column == "customers":
            before, now = int(before), int(now)
        totals[column] = {
            "previous": before,
            "current": now,
            "change": now - before,
            "relative_change": _float(relative_change(before, now)),
        }
    return totals


def segment_totals(customers: pd.DataFrame, segmentations: list[str]) -> pd.DataFrame:
    """Customers and total CLV per segment, as in the segment table: one ``all`` row, then each segmentation
    (named as there, ``forecast.value.segments.segmentation_name``: ``value_tier`` for the column ``segment``).

    Both runs are totalled from their per-customer tables, whose columns keep their names across versions, so a
    previous run written when the segment tables named the value tiers ``segment`` compares under the new names.
    Segmentations missing from ``customers`` (a segment column added since an earlier run) are skipped.

    Returns
    -------
    pandas.DataFrame
        Columns segmentation, segment, customers, clv_total.
    """
    frames = [pd.DataFrame({"segmentation": [segmentation_name(None)], "segment": [ALL], "customers": [len(customers)],
                            "clv_total": [float(customers["clv"].sum())]})]  # fmt: skip
    for column in segmentations:
        if column not in customers.columns:
            continue
        # Categorical tiers keep their order (best first); other columns sort by label.
        grouped = customers.groupby(column, observed=True, sort=True)["clv"].agg(["size", "sum"])
        frames.append(
            pd.DataFrame(
                {
                    "segmentation": segmentation_name(column),
                    "segment": grouped.index.astype(str),
                    "customers": grouped["size"].to_numpy(),
                    "clv_total": grouped["sum"].to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def segment_drift(previous: pd.DataFrame, current: pd.DataFrame) -> list[dict[str, Any]]:
    """Per-segment CLV change from two segment tables (``forecast.value.segments.segment_table`` outputs).

    Segments present in only one run get 0 customers and 0 CLV in the other.

    Returns
    -------
    list of dict
        One per (segmentation, segment), in the current table's order then previous-only segments:
        segmentation, segment, customers_previous, customers_current, clv_previous, clv_current,
        clv_change, clv_relative_change.
    """
    keys = ["segmentation", "segment"]
    columns = [*keys, "customers", "clv_total"]
    before = previous[columns].astype({"segmentation": str, "segment": str})
    now = current[columns].astype({"segmentation": str, "segment": str})
    merged = now.merge(before, on=keys, how="outer", suffixes=("_current", "_previous"), sort=False)
    order = {key: i for i, key in enumerate(zip(now["segmentation"], now["segment"], strict=True))}
    keys_merged = zip(merged["segmentation"], merged["segment"], strict=True)
    merged["_order"] = [order.get(key, len(order)) for key in keys_merged]
    merged = merged.sort_values(["_order", "segmentation", "segment"], kind="stable").fillna(0)
    rows = []
    for row in merged.to_dict("records"):
        clv_previous, clv_current = float(row["clv_total_previous"]), float(row["clv_total_current"])
        rows.append(
            {
                "segmentation": row["segmentation"],
                "segment": row["segment"],
                "customers_previous": int(row["customers_previous"]),
                "customers_current": int(row["customers_current"]),
                "clv_previous": clv_previous,
                "clv_current": clv_current,
                "clv_change": clv_current - clv_previous,
                "clv_relative_change": _float(relative_change(clv_previous, clv_current)),
            }
        )
    return rows


#: The columns of ``movements``: each customer's tier in the previous run and in this one, and whether it was and
#: is alive (P(alive) at or above the lapse threshold), then the customers counted.
MOVEMENT_KEYS = ["from", "to", "was_alive", "is_alive"]


def movements(previous: pd.DataFrame, current: pd.DataFrame, lapsed_p_alive: float) -> pd.DataFrame:
    """The customers of either run counted by ``MOVEMENT_KEYS``: tier ``new`` for those not in the previous run,
    ``missing`` for those not in this one (whose liveness there is False).

    Parameters
    ----------
    previous, current
        The runs' customers, indexed by customer_id, with segment (the value tier) and p_alive.

    Returns
    -------
    pandas.DataFrame
        Columns ``MOVEMENT_KEYS`` and customers: a small table from which ``transition_table`` and
        ``customer_flows`` are found (another engine adds up the same table from its own customers).
    """
    before = pd.DataFrame(
        {"from": previous["segment"].astype("string"), "was_alive": previous["p_alive"] >= lapsed_p_alive}
    )
    now = pd.DataFrame({"to": current["segment"].astype("string"), "is_alive": current["p_alive"] >= lapsed_p_alive})
    joined = before.join(now, how="outer")
    joined = joined.fillna({"from": NEW, "to": MISSING, "was_alive": False, "is_alive": False})
    joined[["was_alive", "is_alive"]] = joined[["was_alive", "is_alive"]].astype(bool)
    return joined.groupby(MOVEMENT_KEYS, observed=True).size().rename("customers").reset_index()


def transition_table(moved: pd.DataFrame, tiers: list[str]) -> pd.DataFrame:
    """Count customers by value tier in the previous run (rows) and in the current run (columns).

    Parameters
    ----------
    moved
        ``movements``' counts.
    tiers
        Tier labels, best first.

    Returns
    -------
    pandas.DataFrame
        Integer counts; rows ``new`` (not in the previous run) then the tiers; columns the tiers then
        ``missing`` (in the previous run but not in this one). Labels outside ``tiers`` (a run with other tiers)
        follow them, sorted.
    """
    source, target = moved["from"].astype(str), moved["to"].astype(str)
    extra = sorted((set(source) | set(target)) - {*tiers, NEW, MISSING})
    labels = [*tiers, *extra]
    table = moved.assign(**{"from": source, "to": target}).pivot_table(
        index="from", columns="to", values="customers", aggfunc="sum", fill_value=0
    )
    return table.reindex(index=[NEW, *labels], columns=[*labels, MISSING], fill_value=0).astype("int64")


def customer_flows(moved: pd.DataFrame) -> dict[str, int]:
    """New, continuing, lapsed and missing customers between two runs, from ``movements``' counts.

    new: in this run, not in the previous one (first purchase after the previous as_of).
    lapsed: in both runs, P(alive) at or above the threshold before and below it now.
    reactivated: in both, below before and at or above now. missing: in the previous run only
    (the data up to the previous as_of changed; normally 0).
    """
    count = moved["customers"].to_numpy(np.int64)
    in_previous, in_current = (moved["from"] != NEW).to_numpy(), (moved["to"] != MISSING).to_numpy()
    both = in_previous & in_current
    was_alive, is_alive = moved["was_alive"].to_numpy(bool), moved["is_alive"].to_numpy(bool)
    return {
        "previous": int(count[in_previous].sum()),
        "current": int(count[in_current].sum()),
        "continuing": int(count[both].sum()),
        "new": int(count[~in_previous].sum()),
        "missing": int(count[~in_current].sum()),
        "lapsed": int(count[both & was_alive & ~is_alive].sum()),
        "reactivated": int(count[both & ~was_alive & is_alive].sum()),
    }


@dataclass(frozen=True)
class CustomerChanges:
    """What drift needs of two runs' per-customer tables, added up by an engine: their totals (``run_totals``),
    their segment totals (``segment_totals``) and the customers' movements (``movements``)."""

    previous_totals: dict[str, float]
    current_totals: dict[str, float]
    previous_segments: pd.DataFrame
    current_segments: pd.DataFrame
    moved: pd.DataFrame


def customer_changes(
    previous: pd.DataFrame, current: pd.DataFrame, lapsed_p_alive: float, segmentations: list[str]
) -> CustomerChanges:
    """``CustomerChanges`` of two per-customer tables in memory (indexed by customer_id)."""
    return CustomerChanges(
        run_totals(previous),
        run_totals(current),
        segment_totals(previous, segmentations),
        segment_totals(current, segmentations),
        movements(previous, current, lapsed_p_alive),
    )


def compare_runs(
    previous: dict[str, Any],
    current: dict[str, Any],
    tiers: list[str],
    limits: DriftConfig,
    segmentations: list[str] | None = None,
) -> dict[str, Any]:
    """Drift between a previous run and the current one, both in memory (``drift_document``).

    Parameters
    ----------
    previous, current
        Each with ``as_of`` (ISO date), ``customers`` (indexed by customer_id with clv, clv_heuristic,
        expected_purchases, p_alive, segment and the data's segment columns) and ``models``
        (``{"purchases": to_dict(), "spend": to_dict()}``).
    tiers
        Value-tier labels of the current config, best first.
    limits
        Warning thresholds (``drift`` section of the config).
    segmentations
        Columns to total CLV by; default ``["segment"]`` (the value tiers). Add the data's segment columns.
    """
    changes = customer_changes(
        previous["customers"], current["customers"], limits.lapsed_p_alive, segmentations or ["segment"]
    )
    return drift_document(previous, current, changes, tiers, limits)


def drift_document(
    previous: dict[str, Any], current: dict[str, Any], changes: CustomerChanges, tiers: list[str], limits: DriftConfig
) -> dict[str, Any]:
    """The manifest's ``drift`` from two runs' ``as_of`` and ``models`` and their customers' ``CustomerChanges``.

    Returns
    -------
    dict
        previous_as_of, as_of, days_apart, thresholds, parameters (purchases, spend), totals, segments,
        tiers (labels_from, labels_to, counts, moved, moved_up, moved_down, stayed), customers, warnings
        (docs/operations.md, "Drift").
    """
    since = previous["as_of"]
    parameters = {
        role: parameter_drift(previous["models"][role], current["models"][role]) for role in ("purchases", "spend")
    }
    totals = total_drift(changes.previous_totals, changes.current_totals)
    transitions = transition_table(changes.moved, tiers)
    flows = customer_flows(changes.moved)
    return {
        "previous_as_of": since,
        "as_of": current["as_of"],
        "days_apart": (pd.Timestamp(current["as_of"]) - pd.Timestamp(since)).days,
        "thresholds": limits.model_dump(mode="json"),
        "parameters": parameters,
        "totals": totals,
        "segments": segment_drift(changes.previous_segments, changes.current_segments),
        "tiers": {
            "labels_from": [str(label) for label in transitions.index],
            "labels_to": [str(label) for label in transitions.columns],
            "counts": transitions.to_numpy(dtype=np.int64).tolist(),
            **tier_moves(transitions),
        },
        "customers": flows,
        "warnings": [
            *parameter_warnings(parameters, since, limits.parameter_z),
            *total_clv_warnings(totals, since, limits.total_clv_change),
            *missing_customer_warnings(flows, since),
        ],
    }


def tier_moves(transitions: pd.DataFrame) -> dict[str, int]:
    """How many customers of both runs moved to a better tier, to a worse one, or stayed (``tier_transitions``).

    Returns
    -------
    dict
        moved, moved_up, moved_down, stayed. New and missing customers do not count.
    """
    labels = [label for label in transitions.columns if label != MISSING]
    rank = {label: i for i, label in enumerate(labels)}  # best first
    counts = transitions.loc[labels, labels].to_numpy(dtype=np.int64)
    moved_up = moved_down = stayed = 0
    for i, source in enumerate(labels):
        for j, target in enumerate(labels):
            count = int(counts[i, j])
            if source == target:
                stayed += count
            elif rank[target] < rank[source]:
                moved_up += count
            else:
                moved_down += count
    return {"moved": moved_up + moved_down, "moved_up": moved_up, "moved_down": moved_down, "stayed": stayed}


def parameter_warnings(parameters: dict[str, dict[str, Any]], since: str, parameter_z: float) -> list[str]:
    """A warning per model that changed since the previous run, and per parameter whose |z| exceeds the limit."""
    warnings = []
    for role, drift in parameters.items():
        if not drift["comparable"]:
            warnings.append(
                f"The {role} model changed from {drift['previous_model']} to {drift['model']} since the run as of "
                f"{since}: its parameters are not compared."
            )
        for name, values in drift["params"].items():
            if values["z"] is not None and abs(values["z"]) > parameter_z:
                warnings.append(
                    f"{drift['model']} parameter {name} moved from {values['previous']:.4g} to {values['current']:.4g} "
                    f"since the run as of {since} (z = {values['z']:.1f}, beyond +-{parameter_z:g})."
                )
    return warnings


def total_clv_warnings(totals: dict[str, Any], since: str, total_clv_change: float) -> list[str]:
    """A warning when total predictive CLV changed by more than the limit (a share of the previous total)."""
    clv_change = totals["clv"]["relative_change"]
    if clv_change is None or abs(clv_change) <= total_clv_change:
        return []
    return [
        f"Total predictive CLV changed by {clv_change:+.0%} since the run as of {since} "
        f"({totals['clv']['previous']:,.0f} -> {totals['clv']['current']:,.0f}; limit {total_clv_change:.0%})."
    ]


def missing_customer_warnings(flows: dict[str, int], since: str) -> list[str]:
    """A warning when customers of the previous run are missing from this one: the data up to its as_of changed."""
    if not flows["missing"]:
        return []
    return [
        f"{flows['missing']:,} customers of the run as of {since} are missing from this run: the data up to "
        "that date changed (rows deleted or customer ids rewritten)."
    ]
