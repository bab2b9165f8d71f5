"""Tests of forecast.value.budget (new-customer CLV, max acquisition cost, value at risk, payback), the RFM groups,
the segment heuristic, the budget figures in the pipeline and the `forecast budget` command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import hyp2f1
from typer.testing import CliRunner

from forecast.batch.pipeline import forecast as run_forecast
from forecast.cli import app
from forecast.config import DAYS_PER_MONTH, load_config
from forecast.data.ingest import read_transactions
from forecast.models import BetaGeo
from forecast.value.budget import (
    budget_columns,
    decision_columns,
    first_purchase_value,
    new_customer_clv,
    payback_month,
)
from forecast.value.segments import cohorts, rfm_groups, segment_table, segment_totals
from forecast.value.valuation import Valuation
from tests import reference as ref
from tests.conftest import model_with_params

CONFIGS = Path(__file__).parents[2] / "configs"
#: BG/NBD on the CDNOW sample, Fader, Hardie & Lee (2005); tests/reference.py.
FHL_2005 = ref.BGNBD_CDNOW_SAMPLE
#: 12 months in weeks at 1% a month and margin 0.3, the CDNOW configs' valuation.
WEEKLY = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)


def expected_purchases_new_by_hand(t: np.ndarray, r: float, alpha: float, a: float, b: float) -> np.ndarray:
    """BG/NBD E[X(t)] of a new customer, Fader, Hardie & Lee (2005) eq. (7)."""
    return (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))


def test_hand_formula_reproduces_the_published_new_customer_expectations():
    """E[X(t)] = 0.0532, 0.1506, 1.0437, 1.444, 1.8576 at t = 1, 3, 32, 52, 78 weeks (tests/reference.py)."""
    t = np.array(list(ref.BGNBD_NEW_CUSTOMER_EXPECTATIONS), dtype=float)
    expected = list(ref.BGNBD_NEW_CUSTOMER_EXPECTATIONS.values())
    np.testing.assert_allclose(expected_purchases_new_by_hand(t, **FHL_2005), expected, atol=6e-4)


def _segment_customers(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    """Customers as (segment, average purchase value, purchases per year)."""
    frame = pd.DataFrame(rows, columns=["segment", "avg_purchase_value", "purchases_per_year"])
    return frame.assign(clv=0.0, revenue=0.0, p_alive=1.0, expected_purchases=0.0)


@pytest.mark.parametrize(
    ("value", "per_year", "years", "expected"),
    [*ref.HEURISTIC_WORKED_EXAMPLES, (200, 1, 1, 200), (75, 3, 1, 225)],
)
def test_segment_heuristic_reproduces_the_worked_examples(value, per_year, years, expected):
    """Segment heuristic = mean purchase value x mean purchases per year x lifespan, per customer.

    Worked examples of the seed articles (tests/reference.py): 1,000 x 6 x 5 = 30,000; 5,000 x 4 x 8 = 160,000;
    800 x 5 x 3 = 12,000; 200 x 1 = 200 vs 75 x 3 = 225 a year. Two customers straddle the means.
    """
    customers = _segment_customers([("s", value * 0.8, per_year - 0.5), ("s", value * 1.2, per_year + 0.5)])
    table = segment_table(customers, ["segment"], lifespan_years=years, margin=1.0)
    row = table[table["segmentation"] == "value_tier"].iloc[0]
    assert row["clv_heuristic_total"] == pytest.approx(2 * expected)


def test_segment_heuristic_ranks_the_frequent_small_spender_above_the_big_one_time_spender():
    """200 x 1 = 200 a year against 75 x 3 = 225 a year; over 3 years 600 against 675 (seed articles)."""
    customers = _segment_customers([("big, once a year", 200, 1), ("small, three times", 75, 3)])
    table = segment_table(customers, ["segment"], lifespan_years=3, margin=1.0).set_index("segment")
    assert table.loc["big, once a year", "clv_heuristic_total"] == pytest.approx(600)
    assert table.loc["small, three times", "clv_heuristic_total"] == pytest.approx(675)


def test_new_customer_clv_and_payback_equal_a_hand_computation():
    """Margin x (first purchase + spend x discounted monthly increments of E[X(t)]), month by month.

    E[X(t)] by FHL (2005) eq. (7) with their CDNOW parameters; weeks, 3 months, 1% a month, margin 0.5,
    first purchase 20, spend 30 per repeat purchase.
    """
    months = np.arange(4) * DAYS_PER_MONTH / 7.0
    increments = np.diff(expected_purchases_new_by_hand(months, **FHL_2005))
    by_hand = 0.5 * (20 + 30 * np.concatenate([[0.0], np.cumsum(increments / 1.01 ** np.arange(1, 4))]))
    valuation = replace(WEEKLY, horizon_months=3, margin=0.5)
    cumulative = new_customer_clv(20.0, 30.0, model_with_params(BetaGeo, FHL_2005), valuation)
    np.testing.assert_allclose(cumulative, by_hand, rtol=1e-9)
    assert payback_month(cumulative, by_hand[0]) == 0
    assert payback_month(cumulative, (by_hand[1] + by_hand[2]) / 2) == 2
    assert payback_month(cumulative, by_hand[-1] + 0.01) == -1


def test_budget_columns_match_a_hand_computation():
    """Per segment: mean first purchase, mean expected spend, max CAC = CLV / 3, value at risk below P(alive) 0.5."""
    customers = pd.DataFrame(
        {
            "segment": ["a", "a", "b"],
            "frequency": [0, 2, 1],
            "monetary_value": [0.0, 10.0, 40.0],
            "revenue": [30.0, 25.0, 90.0],  # first purchases: 30, 5, 50
            "expected_spend": [20.0, 12.0, 35.0],
            "p_alive": [1.0, 0.3, 0.2],
            "clv": [4.0, 2.0, 7.0],
            "expected_purchases": [1.0, 0.5, 0.3],
            "avg_purchase_value": [30.0, 25 / 3, 45.0],
            "purchases_per_year": [0.0, 2.0, 1.0],
            "channel": ["=cmd", None, "=cmd"],  # a data segment column with a missing value
        },
        index=pd.Index(["c1", "c2", "c3"], name="customer_id"),
    )
    np.testing.assert_allclose(first_purchase_value(customers), [30.0, 5.0, 50.0])
    model = model_with_params(BetaGeo, FHL_2005)
    table = segment_table(customers, ["segment", "channel"], 3.0, 0.3)
    table = budget_columns(table, customers, model, None, WEEKLY, 3.0, 0.5).set_index("segment")
    assert table.loc["=cmd", "customers"] == 2 and table.loc["=cmd", "value_at_risk"] == 7.0
    assert table.loc["=cmd", "first_purchase_value"] == pytest.approx(40.0)
    repeat = new_customer_clv(0.0, 1.0, model, replace(WEEKLY, margin=1.0))[-1]  # discounted repeat purchases
    a_clv = 0.3 * (17.5 + 16.0 * repeat)
    assert table.loc["a", "new_customer_clv"] == pytest.approx(a_clv)
    assert table.loc["a", "max_acquisition_cost"] == pytest.approx(a_clv / 3)
    assert table.loc["b", "new_customer_clv"] == pytest.approx(0.3 * (50.0 + 35.0 * repeat))
    assert table.loc["a", "value_at_risk"] == 2.0 and table.loc["b", "value_at_risk"] == 7.0
    assert table.loc["all customers", "value_at_risk"] == 9.0
    assert table.loc["all customers", "customers_at_risk"] == 2
    assert table["clv_lower_total"].isna().all()  # no draws, no intervals

    payback = decision_columns(table.reset_index(), model, WEEKLY, a_clv / 3, 3.0).set_index("segment")
    assert payback.loc["a", "ltv_to_cac"] == pytest.approx(3.0)
    assert bool(payback.loc["b", "pays_back"]) and payback.loc["b", "payback_month"] == 0  # 0.3 x 50 > CAC
    cumulative = new_customer_clv(17.5, 16.0, model, WEEKLY)
    assert payback.loc["a", "payback_month"] == int(np.argmax(cumulative >= a_clv / 3))
    assert payback["biddable"].to_dict() == {"all customers": True, "a": False, "b": False, "=cmd": True}
    by_segment = decision_columns(table.reset_index(), model, WEEKLY, {"a": 1e9, "default": 1.0}, 3.0)
    assert by_segment.set_index("segment")["cac"].to_dict() == {"all customers": 1.0, "a": 1e9, "b": 1.0, "=cmd": 1.0}
    assert not by_segment.set_index("segment").loc["a", "pays_back"]
    assert pd.isna(by_segment.set_index("segment").loc["a", "payback_month"])  # never within the horizon
    without = decision_columns(table.reset_index(), model, WEEKLY, None, 3.0)
    assert without["cac"].isna().all() and without["pays_back"].isna().all()


def test_payback_is_month_0_when_the_first_purchase_covers_the_cac_and_never_when_nothing_does():
    """A customer whose first purchase alone covers the CAC pays back in month 0; one who never covers it, never."""
    model = model_with_params(BetaGeo, FHL_2005)
    cumulative = new_customer_clv(np.array([100.0, 0.0]), np.array([0.0, 0.0]), model, WEEKLY)
    np.testing.assert_array_equal(payback_month(cumulative, np.array([[30.0], [1.0]])), [0, -1])


def test_cohorts_are_the_quarters_or_months_of_the_first_purchase_in_time_order():
    first = pd.Series(pd.to_datetime(["1997-03-31", "1996-12-01", "1997-01-01", "1997-04-01"]))
    assert cohorts(first).tolist() == ["1997-Q1", "1996-Q4", "1997-Q1", "1997-Q2"]
    assert list(cohorts(first).cat.categories) == ["1996-Q4", "1997-Q1", "1997-Q2"]
    assert cohorts(first, "month").tolist() == ["1997-03", "1996-12", "1997-01", "1997-04"]


def test_rfm_groups_follow_the_documented_grid():
    """Recency thirds of the time since the last purchase x frequency scores (none, up to median, above)."""
    summary = pd.DataFrame(
        {
            # time since last purchase T - recency: 1, 1, 2 (recent third); 5, 5, 6; 20, 20, 30 (long ago)
            "frequency": [5, 0, 1, 1, 3, 0, 6, 1, 0],
            "recency": [29, 0, 28, 25, 25, 0, 10, 10, 0],
            "T": [30, 1, 30, 30, 30, 6, 30, 30, 30],
        },
        index=[f"c{i}" for i in range(9)],
    )
    groups = rfm_groups(summary)
    # median repeat purchases among repeat buyers (5, 1, 1, 3, 6, 1) is 2
    assert groups.tolist() == [
        "champions",
        "new",
        "loyal",
        "loyal",
        "loyal",
        "one-time",
        "at risk",
        "at risk",
        "lapsed",
    ]


@pytest.fixture(scope="module")
def sample_forecast():
    """The pipeline's forecast on the CDNOW sample with 100 parameter draws."""
    config = load_config(CONFIGS / "cdnow_sample.yaml").model_copy(update={"interval_draws": 100})
    transactions = read_transactions(config.data)
    assert config.as_of is not None
    return config, run_forecast(config, transactions, config.as_of)


def test_segment_totals_add_up_to_the_whole(sample_forecast):
    """In every segmentation the segments' customers, revenue, CLV and value at risk add up to 'all customers'."""
    _, result = sample_forecast
    table = result.segments
    whole = table[table["segmentation"] == "all"].iloc[0]
    assert set(table["segmentation"]) == {"all", "value_tier", "rfm", "cohort"}
    for segmentation, rows in table[table["segmentation"] != "all"].groupby("segmentation"):
        for column in ("customers", "revenue_to_date", "clv_total", "value_at_risk", "customers_at_risk"):
            assert rows[column].sum() == pytest.approx(whole[column], rel=1e-9), (segmentation, column)
    assert whole["clv_total"] == pytest.approx(result.customers["clv"].sum())


def test_budget_sums_by_cell_equal_the_sums_of_all_four_columns_at_once(sample_forecast):
    """First purchase and expected spend summed together, value at risk on its own and the at-risk customers
    counted give, bit for bit, the figures of one compensated sum of all four columns per segment."""
    config, result = sample_forecast
    customers, segments = result.customers, result.segments
    at_risk = customers["p_alive"].to_numpy() < config.budget.p_alive_threshold
    values = pd.DataFrame(
        {
            "first_purchase_value": first_purchase_value(customers).to_numpy(),
            "expected_spend": customers["expected_spend"].to_numpy(),
            "at_risk": at_risk.astype(np.int64),
            "risk_clv": np.where(at_risk, customers["clv"].to_numpy(), 0.0),
        }
    )
    groupings: list[str | None] = [None, "segment", "rfm_group"]  # a run's cells
    totals = segment_totals(customers, groupings, values)
    figures = segments.set_index(["segmentation", "segment"]).loc[totals.index]
    count = totals["customers"]
    np.testing.assert_array_equal(figures["first_purchase_value"], totals["first_purchase_value"] / count)
    np.testing.assert_array_equal(figures["new_customer_spend"], totals["expected_spend"] / count)
    np.testing.assert_array_equal(figures["customers_at_risk"], totals["at_risk"].astype(np.int64))
    np.testing.assert_array_equal(figures["value_at_risk"], totals["risk_clv"])


def test_segment_intervals_contain_the_point_figures(sample_forecast):
    """Each segment's CLV total, new-customer CLV, max CAC and value at risk lie inside their intervals."""
    config, result = sample_forecast
    table = result.segments
    for figure, lower, upper in [
        ("clv_total", "clv_lower_total", "clv_upper_total"),
        ("new_customer_clv", "new_customer_clv_lower", "new_customer_clv_upper"),
        ("max_acquisition_cost", "max_acquisition_cost_lower", "max_acquisition_cost_upper"),
        ("value_at_risk", "value_at_risk_lower", "value_at_risk_upper"),
    ]:
        assert (table[lower] <= table[figure]).all() and (table[figure] <= table[upper]).all(), figure
    assert (table["heuristic_gap_lower"] <= table["heuristic_gap"]).all()
    assert (table["heuristic_gap"] <= table["heuristic_gap_upper"]).all()
    np.testing.assert_allclose(
        table["max_acquisition_cost"], table["new_customer_clv"] / config.budget.target_ltv_to_cac
    )
    customers = result.customers
    assert (customers["clv_lower"] <= customers["clv"] + 1e-9).all()
    assert (customers["clv"] <= customers["clv_upper"] + 1e-9).all()


def test_no_draws_means_no_intervals(sample_forecast):
    """interval_draws: 0 switches the intervals off: their columns are empty, the point figures unchanged."""
    config, result = sample_forecast
    transactions = read_transactions(config.data)
    assert config.as_of is not None
    plain = run_forecast(config.model_copy(update={"interval_draws": 0}), transactions, config.as_of)
    assert plain.customers["clv_lower"].isna().all() and plain.segments["clv_upper_total"].isna().all()
    pd.testing.assert_series_equal(plain.segments["new_customer_clv"], result.segments["new_customer_clv"])


def test_budget_command_prints_a_verdict_per_biddable_segment_and_writes_budget_csv(tmp_path):
    """`forecast budget CONFIG --cac X` takes the run's as_of forms, prints one verdict per segment one can bid on
    and writes every segment to budget.csv; it refuses a bad CAC or a file it did not write before any work."""
    runner = CliRunner()
    output = tmp_path / "budget.csv"
    config = str(CONFIGS / "cdnow_sample.yaml")
    result = runner.invoke(app, ["budget", config, "--cac", "8", "--as-of", "1997-09", "--output", str(output)])
    assert result.exit_code == 0, result.output
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert verdicts[0].startswith("  all=all customers (2,357 customers): pays back at 8.00: LTV:CAC")
    assert all(line.startswith(("  all=", "  cohort=")) for line in verdicts)  # no value tier, no RFM group
    table = pd.read_csv(output)
    assert set(table["segmentation"]) == {"all", "value_tier", "rfm", "cohort"}
    assert set(table.loc[~table["biddable"], "segmentation"]) == {"value_tier", "rfm"}
    assert (table["cac"] == 8.0).all() and table["verdict"].str.len().gt(0).all()

    broken = tmp_path / "broken.yaml"
    broken.write_text((CONFIGS / "cdnow_sample.yaml").read_text().replace("lifetimes:CDNOW_sample.txt", "nowhere.csv"))
    bad = runner.invoke(app, ["budget", str(broken), "--cac", "0", "--output", str(output)])
    assert bad.exit_code == 2 and "--cac 0" in bad.output and "positive" in bad.output  # before reading the log
    notes = tmp_path / "notes.csv"
    notes.write_text("my own numbers\n")
    refused = runner.invoke(app, ["budget", config, "--cac", "8", "--output", str(notes)])
    assert refused.exit_code == 2 and "not a budget file" in refused.output
    assert notes.read_text() == "my own numbers\n"
