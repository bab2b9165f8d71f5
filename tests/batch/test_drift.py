"""Month-over-month drift: hand-computed cases, and two consecutive CDNOW months recomputed from their files."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from forecast.batch.drift import (
    change_z,
    compare_runs,
    customer_flows,
    movements,
    parameter_drift,
    segment_drift,
    segment_totals,
    transition_table,
)
from forecast.batch.pipeline import run
from forecast.config import DriftConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
TIERS = ["top", "middle", "rest"]


def test_change_z_divides_by_the_combined_standard_error() -> None:
    """(0.3 - 0.2) / sqrt(0.03^2 + 0.04^2) = 0.1 / 0.05 = 2 (a 3-4-5 triangle)."""
    assert change_z(0.2, 0.3, 0.03, 0.04) == pytest.approx(2.0)
    assert change_z(0.2, 0.3, None, 0.04) is None
    assert change_z(0.2, 0.3, 0.0, 0.0) is None


def test_parameter_drift_compares_only_the_same_model() -> None:
    before = {"name": "bgnbd", "params": {"r": 0.2, "alpha": 4.0}, "standard_errors": {"r": 0.03, "alpha": None}}
    after = {"name": "bgnbd", "params": {"r": 0.3, "alpha": 5.0}, "standard_errors": {"r": 0.04, "alpha": 0.5}}
    drift = parameter_drift(before, after)
    assert drift["comparable"]
    assert drift["params"]["r"]["change"] == pytest.approx(0.1)
    assert drift["params"]["r"]["relative_change"] == pytest.approx(0.5)
    assert drift["params"]["r"]["z"] == pytest.approx(2.0)
    assert drift["params"]["alpha"]["z"] is None
    other = parameter_drift(before, {**after, "name": "pareto"})
    assert not other["comparable"] and other["params"] == {}


def test_transition_table_counts_moves_new_and_missing() -> None:
    """Five customers before, five now: a stays top, b top->middle, c rest->top, d dropped, e and f new."""
    before = pd.DataFrame({"segment": pd.Series({"a": "top", "b": "top", "c": "rest", "d": "middle", "g": "rest"})})
    after = pd.DataFrame(
        {"segment": pd.Series({"a": "top", "b": "middle", "c": "top", "e": "rest", "f": "middle", "g": "rest"})}
    )
    table = transition_table(movements(before.assign(p_alive=0.9), after.assign(p_alive=0.9), 0.5), TIERS)
    assert list(table.index) == ["new", "top", "middle", "rest"]
    assert list(table.columns) == ["top", "middle", "rest", "missing"]
    expected = np.array(
        [
            [0, 1, 1, 0],  # new: f -> middle, e -> rest
            [1, 1, 0, 0],  # top: a stays, b -> middle
            [0, 0, 0, 1],  # middle: d missing
            [1, 0, 1, 0],  # rest: c -> top, g stays
        ]
    )
    np.testing.assert_array_equal(table.to_numpy(), expected)


def test_customer_flows_new_lapsed_reactivated_missing() -> None:
    before = pd.DataFrame({"p_alive": [0.9, 0.6, 0.2, 0.8], "segment": "top"}, index=["a", "b", "c", "d"])
    after = pd.DataFrame({"p_alive": [0.9, 0.4, 0.7, 0.95], "segment": "rest"}, index=["a", "b", "c", "e"])
    flows = customer_flows(movements(before, after, lapsed_p_alive=0.5))
    assert flows == {
        "previous": 4, "current": 4, "continuing": 3, "new": 1, "missing": 1, "lapsed": 1, "reactivated": 1,
    }  # fmt: skip


def test_segment_drift_keeps_segments_of_either_run() -> None:
    before = pd.DataFrame(
        {"segmentation": ["all", "region"], "segment": ["all customers", "north"], "customers": [10, 10],
         "clv_total": [100.0, 100.0]}
    )  # fmt: skip
    after = pd.DataFrame(
        {"segmentation": ["all", "region"], "segment": ["all customers", "south"], "customers": [12, 12],
         "clv_total": [150.0, 150.0]}
    )  # fmt: skip
    rows = segment_drift(before, after)
    assert [(r["segmentation"], r["segment"]) for r in rows] == [
        ("all", "all customers"), ("region", "south"), ("region", "north"),
    ]  # fmt: skip
    assert rows[0]["clv_change"] == 50.0 and rows[0]["clv_relative_change"] == pytest.approx(0.5)
    assert rows[1]["customers_previous"] == 0 and rows[1]["clv_relative_change"] is None
    assert rows[2]["customers_current"] == 0 and rows[2]["clv_change"] == -100.0


def test_segment_totals_per_tier_and_data_segment() -> None:
    customers = pd.DataFrame(
        {"clv": [10.0, 20.0, 30.0, 40.0], "segment": ["top", "rest", "rest", "top"], "region": ["n", "s", "n", None]},
        index=["a", "b", "c", "d"],
    )
    table = segment_totals(customers, ["segment", "region", "channel"])
    assert table.to_dict("list") == {
        "segmentation": ["all", "value_tier", "value_tier", "region", "region"],
        "segment": ["all customers", "rest", "top", "n", "s"],
        "customers": [4, 2, 2, 2, 1],
        "clv_total": [100.0, 50.0, 50.0, 40.0, 20.0],
    }


def _run_tables(clv: list[float], tiers: list[str], r: float, se_r: float, model: str = "bgnbd") -> dict:
    ids = [f"c{i}" for i in range(len(clv))]
    customers = pd.DataFrame(
        {"clv": clv, "clv_heuristic": clv, "expected_purchases": 1.0, "p_alive": 0.9, "segment": tiers}, index=ids
    )
    purchases = {"name": model, "params": {"r": r}, "standard_errors": {"r": se_r}}
    spend = {"name": "gamma_gamma", "params": {"p": 6.0}, "standard_errors": {"p": 1.0}}
    return {"customers": customers, "models": {"purchases": purchases, "spend": spend}}


def test_compare_runs_warns_about_large_shifts_only() -> None:
    """r 0.2 -> 0.4 with SEs 0.03 and 0.04 is z = 4 (> 3); total CLV 100 -> 130 is +30% (> 25%)."""
    before = {"as_of": "2026-01-31", **_run_tables([60.0, 40.0], ["top", "rest"], 0.2, 0.03)}
    shifted = {"as_of": "2026-02-28", **_run_tables([90.0, 40.0], ["top", "rest"], 0.4, 0.04)}
    drift = compare_runs(before, shifted, ["top", "rest"], DriftConfig())
    assert drift["days_apart"] == 28
    assert drift["parameters"]["purchases"]["params"]["r"]["z"] == pytest.approx(4.0)
    assert drift["totals"]["clv"]["relative_change"] == pytest.approx(0.3)
    assert len(drift["warnings"]) == 2
    assert "parameter r" in drift["warnings"][0] and "z = 4.0" in drift["warnings"][0]
    assert "+30%" in drift["warnings"][1]

    calm = {"as_of": "2026-02-28", **_run_tables([62.0, 41.0], ["top", "rest"], 0.21, 0.04)}
    assert compare_runs(before, calm, ["top", "rest"], DriftConfig())["warnings"] == []
    strict = DriftConfig(parameter_z=0.1, total_clv_change=0.01)
    assert len(compare_runs(before, calm, ["top", "rest"], strict)["warnings"]) == 2

    switched = {"as_of": "2026-02-28", **_run_tables([62.0, 41.0], ["top", "rest"], 0.21, 0.04, model="pareto")}
    assert "not compared" in compare_runs(before, switched, ["top", "rest"], DriftConfig())["warnings"][0]


@pytest.fixture(scope="module")
def cdnow_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs as of 1997-03-15, 1997-03-31 and 1997-04-30 on the CDNOW sample, in one runs root.

    The sample's customers made their first purchase by 1997-03-25, so the mid-March run is the one
    that shows new customers; 1997-02-28 is not used because the BG/NBD fit there is degenerate (a, b -> 0).
    """
    folder = tmp_path_factory.mktemp("drift")
    document = yaml.safe_load((ROOT / "configs" / "cdnow_sample.yaml").read_text())
    document.update(as_of=None, output=str(folder / "runs"), models_dir=str(folder / "models"))
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(document))
    config = load_config(config_path)
    days = [dt.date(1997, 3, 15), dt.date(1997, 3, 31), dt.date(1997, 4, 30)]
    return {day.isoformat(): run(config, day).output for day in days}


@pytest.mark.parametrize(("previous", "current"), [("1997-03-31", "1997-04-30"), ("1997-03-15", "1997-03-31")])
def test_drift_between_runs_matches_their_files(cdnow_runs: dict[str, Path], previous: str, current: str) -> None:
    """Every drift figure in the later manifest is recomputed here from the two runs' own files."""
    before_run, after_run = cdnow_runs[previous], cdnow_runs[current]
    drift = json.loads((after_run / "manifest.json").read_text())["drift"]
    assert drift["previous_as_of"] == previous and drift["as_of"] == current
    # customers.parquet holds the figures at full precision (customers.csv rounds them, outputs.csv_number).
    before = pd.read_parquet(before_run / "customers.parquet").set_index("customer_id")
    after = pd.read_parquet(after_run / "customers.parquet").set_index("customer_id")

    assert drift["totals"]["clv"]["previous"] == pytest.approx(before["clv"].sum(), rel=1e-12)
    assert drift["totals"]["clv"]["current"] == pytest.approx(after["clv"].sum(), rel=1e-12)
    assert drift["totals"]["clv"]["change"] == pytest.approx(after["clv"].sum() - before["clv"].sum(), rel=1e-9)
    new = after.index.difference(before.index)
    assert drift["customers"]["new"] == len(new)
    assert (len(new) > 0) == (previous == "1997-03-15")
    assert drift["customers"]["missing"] == 0
    assert drift["customers"]["continuing"] == len(before) == len(after) - len(new)
    alive_before = before["p_alive"] >= 0.5
    alive_after = after.loc[before.index, "p_alive"] >= 0.5
    assert drift["customers"]["lapsed"] == int((alive_before & ~alive_after).sum())

    counts = pd.DataFrame(
        drift["tiers"]["counts"], index=drift["tiers"]["labels_from"], columns=drift["tiers"]["labels_to"]
    )
    crosstab = pd.crosstab(before["segment"].astype(str), after.loc[before.index, "segment"].astype(str))
    for source in crosstab.index:
        for target in crosstab.columns:
            assert counts.loc[source, target] == crosstab.loc[source, target]
    assert counts.loc["new"].sum() == len(new)
    assert counts.loc["new", "top 1%"] == int((after.loc[new, "segment"] == "top 1%").sum())
    assert counts.to_numpy().sum() == len(after)
    assert drift["tiers"]["moved"] + drift["tiers"]["stayed"] == len(before)

    models = {
        name: [json.loads((folder / "models" / f"{name}.json").read_text()) for folder in (before_run, after_run)]
        for name in ("purchases", "spend")
    }
    for role, (old, now) in models.items():
        for parameter, figures in drift["parameters"][role]["params"].items():
            se_old, se_now = old["standard_errors"][parameter], now["standard_errors"][parameter]
            z = (now["params"][parameter] - old["params"][parameter]) / math.hypot(se_old, se_now)
            assert figures["z"] == pytest.approx(z, rel=1e-12)

    # segments.csv holds money in cents: the drift's totals are within half a cent of it.
    segments_before = pd.read_csv(before_run / "segments.csv").set_index(["segmentation", "segment"])
    segments_after = pd.read_csv(after_run / "segments.csv").set_index(["segmentation", "segment"])
    assert {row["segmentation"] for row in drift["segments"]} == {"all", "value_tier"}
    for row in drift["segments"]:
        key = (row["segmentation"], row["segment"])
        assert row["clv_previous"] == pytest.approx(segments_before.loc[key, "clv_total"], abs=0.005)
        assert row["clv_current"] == pytest.approx(segments_after.loc[key, "clv_total"], abs=0.005)
