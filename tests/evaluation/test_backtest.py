"""Tests of forecast.evaluation.backtest: CDNOW holdout figures, leakage, the model choice before the cut-off, the
winner by the deciding scores, and the CLI. The metrics themselves: test_metrics.py."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from forecast.cli import app
from forecast.config import RunConfig, load_config
from forecast.data.ingest import read_transactions
from forecast.data.summary import summarize
from forecast.errors import ConfigError, FitError
from forecast.evaluation.backtest import (
    BacktestResult,
    Split,
    decile_table,
    default_split,
    gb_training_window,
    gradient_boosting_predictions,
    mae,
    resolve_split,
    rmse,
    run_backtest,
    spearman,
    top_capture,
    winners,
)
from forecast.evaluation.log_queries import DuckDBLog
from tests.conftest import CONFIGS
from tests.evaluation.conftest import connection_for

CALIBRATION_END = dt.date(1997, 9, 30)
HOLDOUT_END = dt.date(1998, 6, 30)
PREDICTION_COLUMNS = [
    f"{method}_{what}"
    for method in ("predictive", "heuristic", "gradient_boosting")
    for what in ("purchases", "revenue")
]


@pytest.fixture(scope="module")
def sample_backtest(sample_config: RunConfig, sample_log: pd.DataFrame) -> BacktestResult:
    return run_backtest(DuckDBLog(connection_for(sample_log)), sample_config, CALIBRATION_END, HOLDOUT_END)


# --- CDNOW reference figures ----------------------------------------------------------------------------


def test_backtest_reproduces_cdnow_39_week_holdout(sample_backtest: BacktestResult) -> None:
    """Holdout figures on the CDNOW sample, weeks 1-39 calibration, weeks 40-78 holdout.

    tests/reference.py (recomputed from CDNOW_sample.txt; BTYD vignette tables): repeat purchases 2,457 in
    calibration and 1,882 in the holdout; sum of BG/NBD conditional expectations about 1,653; per-customer
    purchase MAE 0.786 (BG/NBD) vs 1.024 (naive (x/T) x 39), RMSE 1.608 vs 2.212, naive total 2,930.
    """
    document = sample_backtest.document
    assert document["customers"] == 2357
    assert document["holdout_length"] == pytest.approx(39.0)
    assert sample_backtest.customers["frequency"].sum() == 2457
    assert document["actual"]["purchases"] == 1882
    predictive = document["methods"]["predictive"]
    heuristic = document["methods"]["heuristic"]
    assert predictive["model"] == "bgnbd"
    assert predictive["predicted_purchases"] == pytest.approx(1653, abs=1)
    assert predictive["mae_purchases"] == pytest.approx(0.786, abs=6e-4)
    assert predictive["rmse_purchases"] == pytest.approx(1.608, abs=6e-4)
    assert heuristic["predicted_purchases"] == pytest.approx(2930, abs=1)
    assert heuristic["mae_purchases"] == pytest.approx(1.024, abs=6e-4)
    assert heuristic["rmse_purchases"] == pytest.approx(2.212, abs=6e-4)
    assert document["winner"]["mae_purchases"] == "predictive"
    assert predictive["total_revenue_error"] == pytest.approx(predictive["predicted_revenue"] / 70976.39 - 1)


def test_heuristic_purchases_are_the_naive_rate_times_the_holdout(sample_backtest: BacktestResult) -> None:
    """The heuristic restricted to 39 weeks is (x / T) x 39 per customer (Fader, Hardie & Lee 2005)."""
    customers = sample_backtest.customers
    naive = np.where(customers["T"] > 0, customers["frequency"] / customers["T"] * 39.0, 0.0)
    np.testing.assert_allclose(customers["heuristic_purchases"], naive, rtol=1e-12)


def test_tracking_curve_ends_at_all_repeat_purchases(sample_backtest: BacktestResult) -> None:
    """Cumulative repeat purchases reach 2,457 + 1,882 = 4,339 at holdout_end; the model line never falls.

    The model at holdout_end is the sum of unconditional BG/NBD expectations, close to the actual total
    (Fader, Hardie & Lee 2005, figure 2: the model tracks the cumulative sales within a few percent).
    """
    tracking = sample_backtest.tracking
    assert tracking["date"].iloc[-1] == HOLDOUT_END
    assert tracking["actual"].iloc[-1] == 2457 + 1882
    assert np.all(np.diff(tracking["model"]) >= 0) and np.all(np.diff(tracking["actual"]) >= 0)
    assert tracking["model"].iloc[-1] == pytest.approx(4339, rel=0.06)
    steps = pd.Series(tracking["date"]).diff().dropna()
    assert (steps <= pd.Timedelta(days=7)).all()


def test_model_comparison_matches_published_fits(sample_backtest: BacktestResult) -> None:
    """BG/NBD LL -9582.43 and Pareto/NBD LL -9595.0 (Fader, Hardie & Lee 2005); MBG/NBD r, alpha, a, b =
    0.525, 6.183, 0.891, 1.614 (lifetimes tests); BIC = k ln n - 2 LL.
    """
    comparison = sample_backtest.document["model_comparison"]
    assert comparison["bgnbd"]["log_likelihood"] == pytest.approx(-9582.43, abs=0.01)
    assert comparison["pareto"]["log_likelihood"] == pytest.approx(-9595.0, abs=0.05)
    mbgnbd = comparison["mbgnbd"]["params"]
    for name, value in {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}.items():
        assert mbgnbd[name] == pytest.approx(value, rel=2e-3)
    for entry in comparison.values():
        assert entry["bic"] == pytest.approx(4 * math.log(2357) - 2 * entry["log_likelihood"])
    assert comparison["bgnbd"]["mae_purchases"] == sample_backtest.document["methods"]["predictive"]["mae_purchases"]


def test_auto_uses_the_model_the_validation_before_calibration_end_scores_best(
    sample_config: RunConfig, sample_log: pd.DataFrame, sample_backtest: BacktestResult
) -> None:
    """``auto`` takes the best predictive log-likelihood on the last window before calibration_end, never a holdout
    score; the holdout comparison stays in the file as information."""
    auto = run_backtest(
        DuckDBLog(connection_for(sample_log)), sample_config.model_copy(update={"purchase_model": "auto"}),
        CALIBRATION_END, HOLDOUT_END,
    )  # fmt: skip
    selection = auto.document["model_selection"]
    scores = selection["scores"]
    best = max(scores, key=lambda name: scores[name]["log_likelihood"])
    assert selection["chosen"] == best == auto.document["purchase_model"]["used"]
    assert auto.document["purchase_model"]["configured"] == "auto"
    assert auto.document["methods"]["predictive"]["model"] == best
    assert all(window["scored_through"] <= CALIBRATION_END.isoformat() for window in selection["windows"])
    assert auto.document["model_comparison"][best]["mae_purchases"] == pytest.approx(
        auto.document["methods"]["predictive"]["mae_purchases"]
    )
    # The configured BG/NBD run validated the same models on the same window: the same scores.
    assert sample_backtest.document["model_selection"]["scores"] == scores
    assert sample_backtest.document["purchase_model"]["used"] == "bgnbd"


def test_overall_winner_is_decided_by_the_deciding_scores(sample_backtest: BacktestResult) -> None:
    """On the CDNOW sample each method wins one deciding score (total error: gradient boosting, revenue RMSE: the
    predictive method, normalized Gini: the heuristic); the predictive method has the lowest sum of ranks."""
    document = sample_backtest.document
    overall = document["overall_winner"]
    assert overall["decided_by"] == ["total_revenue_error", "rmse_revenue", "normalized_gini"]
    assert overall["wins"] == {"predictive": 1, "heuristic": 1, "gradient_boosting": 1}
    assert overall["method"] == "predictive"
    for metric in overall["decided_by"]:
        assert document["winner"][metric] in document["methods"]


def test_gradient_boosting_trains_inside_the_calibration_period(sample_backtest: BacktestResult) -> None:
    """With 39 calibration weeks and a 39-week holdout there is no earlier 39-week window: the baseline
    trains on the second half of the calibration period (136 days from 1997-05-17) and scales by 273/136.
    """
    training = sample_backtest.document["methods"]["gradient_boosting"]["training"]
    assert training["target_end"] == CALIBRATION_END.isoformat()
    assert training["features_as_of"] == "1997-05-17"
    assert training["scale_to_holdout"] == pytest.approx(273 / 136)
    start, window = gb_training_window(dt.date(1997, 1, 1), Split(dt.date(1998, 1, 1), dt.date(1998, 3, 1)))
    assert (start, window) == (dt.date(1997, 11, 3), 59)  # a short holdout: a window as long as the holdout


def test_gradient_boosting_refuses_a_calibration_period_without_history(
    sample_config: RunConfig, sample_log: pd.DataFrame
) -> None:
    con = connection_for(sample_log)
    summary = summarize(con, dt.date(1997, 1, 2))
    with pytest.raises(FitError, match="too little history to train on before 1997-01-02"):
        gradient_boosting_predictions(DuckDBLog(con), summary, Split(dt.date(1997, 1, 2), HOLDOUT_END), 7.0, 0)


# --- leakage ------------------------------------------------------------------------------------------


def _changed_log(log: pd.DataFrame, change: str) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    holdout = log["ts"] >= pd.Timestamp(CALIBRATION_END + dt.timedelta(days=1))
    if change == "shuffle_holdout_rows":
        shuffled = log[holdout].sample(frac=1.0, random_state=7)
        return pd.concat([log[~holdout], shuffled], ignore_index=True)
    if change == "rows_after_holdout_end":
        later = log.sample(n=500, random_state=7).assign(
            ts=pd.Timestamp(HOLDOUT_END + dt.timedelta(days=1)) + pd.to_timedelta(rng.integers(0, 300, 500), "D")
        )
        newcomers = later.head(50).assign(customer_id=[f"new{i}" for i in range(50)])
        return pd.concat([log, later, newcomers], ignore_index=True)
    if change == "holdout_amounts":
        changed = log.copy()
        changed.loc[holdout, "amount"] = changed.loc[holdout, "amount"] * rng.uniform(0.1, 10.0, int(holdout.sum()))
        return changed
    raise ValueError(change)


def _rounded(value: object) -> object:
    """The same structure with every float rounded to 10 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


@pytest.mark.slow
@pytest.mark.parametrize("change", ["shuffle_holdout_rows", "rows_after_holdout_end", "holdout_amounts"])
def test_holdout_rows_cannot_reach_the_predictions(
    change: str, sample_config: RunConfig, sample_log: pd.DataFrame, sample_backtest: BacktestResult
) -> None:
    """Leakage is impossible by construction: what happens after calibration_end changes no fit and no
    prediction of any method (only the actuals it is scored against)."""
    changed = run_backtest(
        DuckDBLog(connection_for(_changed_log(sample_log, change))), sample_config, CALIBRATION_END, HOLDOUT_END
    )
    pd.testing.assert_frame_equal(
        changed.customers[["frequency", "recency", "T", "monetary_value", *PREDICTION_COLUMNS]],
        sample_backtest.customers[["frequency", "recency", "T", "monetary_value", *PREDICTION_COLUMNS]],
        check_exact=True,
    )
    for name, entry in sample_backtest.document["model_comparison"].items():
        assert changed.document["model_comparison"][name]["params"] == entry["params"]
        assert changed.document["model_comparison"][name]["log_likelihood"] == entry["log_likelihood"]
    assert (
        changed.document["methods"]["gradient_boosting"]["training"]
        == (sample_backtest.document["methods"]["gradient_boosting"]["training"])
    )
    if change == "holdout_amounts":
        assert changed.document["actual"]["revenue"] != sample_backtest.document["actual"]["revenue"]
        assert changed.document["actual"]["purchases"] == sample_backtest.document["actual"]["purchases"]
    else:
        # The whole document, actuals and scores included, is the same: rows after holdout_end are not counted.
        # (Holdout revenue sums may differ in the last bits: DuckDB's sums depend on row order.)
        assert _rounded(changed.document) == _rounded(sample_backtest.document)


# --- metrics on hand-built cases ---------------------------------------------------------------------


def test_mae_and_rmse_average_over_customers() -> None:
    """Errors 0, 2, 0, 4 on four customers: MAE 6 / 4, RMSE sqrt(20 / 4)."""
    predicted = np.array([1.0, 2.0, 3.0, 4.0])
    actual = np.array([1.0, 0.0, 3.0, 8.0])
    assert mae(predicted, actual) == pytest.approx(6.0 / 4)
    assert rmse(predicted, actual) == pytest.approx(math.sqrt(20.0 / 4))


def test_spearman_gives_ties_their_average_rank_and_none_for_a_constant() -> None:
    """Ranks x = 1..5, y = 1, 2, 3.5, 5, 3.5: r = 8 / sqrt(10 x 9.5)."""
    assert spearman(np.array([1, 2, 3, 4, 5.0]), np.array([5, 6, 7, 8, 7.0])) == pytest.approx(8 / math.sqrt(95))
    assert spearman(np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(-1.0)
    assert spearman(np.zeros(4), np.arange(4.0)) is None


def test_top20_capture_takes_the_highest_ranked_and_shares_boundary_ties() -> None:
    """Ten customers: the top 20% are the two ranked highest; ties at the boundary share the places."""
    actual = np.array([10.0, 0.0, 0, 0, 0, 0, 0, 0, 30.0, 60.0])
    assert top_capture(np.array([9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0]), actual) == pytest.approx(0.10)
    assert top_capture(np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), actual) == pytest.approx(0.90)
    # Four customers tied at the top for two places: each counts one half, (10 + 0 + 0 + 30) / 2 of 100.
    assert top_capture(np.array([5.0, 5, 0, 0, 0, 0, 0, 0, 5, 5]), actual) == pytest.approx(0.20 + 0.30)
    assert top_capture(np.ones(10), actual) == pytest.approx(0.20)
    assert top_capture(np.ones(10), np.zeros(10)) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=40),
)
def test_rank_metrics_stay_in_range_and_below_a_perfect_ranking(pairs: list[tuple[float, float]]) -> None:
    predicted, actual = (np.array(values) for values in zip(*pairs, strict=True))
    capture = top_capture(predicted, actual)
    if actual.sum() <= 0:
        assert capture is None
    else:
        assert capture is not None
        perfect = top_capture(actual, actual)
        assert perfect is not None
        assert -1e-12 <= capture <= perfect + 1e-12 <= 1 + 2e-12
    correlation = spearman(predicted, actual)
    assert correlation is None or -1 - 1e-12 <= correlation <= 1 + 1e-12


def test_decile_table_puts_the_highest_predictions_in_decile_1() -> None:
    """Twenty customers with predicted revenue 20..1: decile 1 holds the two highest (20 and 19)."""
    predicted = np.arange(20.0, 0.0, -1.0)
    actual = np.arange(20.0)
    table = decile_table(predicted, actual, predicted / 10, actual / 10)
    assert [row["decile"] for row in table] == list(range(1, 11))
    assert all(row["customers"] == 2 for row in table)
    assert table[0]["predicted_revenue"] == 39.0 and table[0]["actual_revenue"] == 1.0
    assert table[-1]["predicted_revenue"] == 3.0 and table[-1]["actual_revenue"] == 37.0
    assert table[0]["predicted_purchases"] == pytest.approx(3.9)


def test_winners_take_lowest_errors_and_highest_rank_quality() -> None:
    methods = {
        "a": {"total_revenue_error": -0.1, "mae_purchases": 1.0, "rmse_purchases": 2.0, "mae_revenue": 5.0,
              "rmse_revenue": 9.0, "normalized_gini": 0.7, "spearman_revenue": 0.4, "top20_capture": 0.5},
        "b": {"total_revenue_error": 0.05, "mae_purchases": 0.5, "rmse_purchases": 2.0, "mae_revenue": 6.0,
              "rmse_revenue": 8.0, "normalized_gini": None, "spearman_revenue": 0.6, "top20_capture": None},
    }  # fmt: skip
    assert winners(methods) == {
        "total_revenue_error": "b", "rmse_revenue": "b", "mae_purchases": "b", "rmse_purchases": "a",
        "mae_revenue": "a", "normalized_gini": "a", "spearman_revenue": "b", "top20_capture": "a",
    }  # fmt: skip


# --- splits and config ------------------------------------------------------------------------------


def test_default_split_holds_out_the_last_third() -> None:
    split = default_split(dt.date(1997, 1, 1), dt.date(1998, 6, 30))
    assert split == Split(dt.date(1997, 12, 30), dt.date(1998, 6, 30))
    assert split.holdout_days() == round(545 / 3)


def test_split_comes_from_the_config_section_and_can_be_overridden(sample_config: RunConfig) -> None:
    con = read_transactions(sample_config.data).connection
    assert resolve_split(DuckDBLog(con), sample_config) == Split(CALIBRATION_END, HOLDOUT_END)
    assert resolve_split(DuckDBLog(con), sample_config, dt.date(1997, 6, 30)) == Split(
        dt.date(1997, 6, 30), HOLDOUT_END
    )
    without = sample_config.model_copy(update={"backtest": None, "as_of": None})
    assert resolve_split(DuckDBLog(con), without) == default_split(dt.date(1997, 1, 1), HOLDOUT_END)
    with pytest.raises(ConfigError, match="before the first transaction"):
        resolve_split(DuckDBLog(con), sample_config, dt.date(1996, 6, 30))
    with pytest.raises(ConfigError, match="not after calibration_end"):
        resolve_split(DuckDBLog(con), sample_config, dt.date(1998, 1, 1), dt.date(1997, 12, 1))


def test_config_rejects_a_holdout_that_ends_before_calibration(tmp_path: Path) -> None:
    text = (
        (CONFIGS / "cdnow_sample.yaml")
        .read_text(encoding="utf-8")
        .replace("holdout_end: 1998-06-30", "holdout_end: 1997-06-30")
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"backtest.*holdout_end 1997-06-30 must be after calibration_end"):
        load_config(path)


# --- command line ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_backtest_writes_backtest_json_and_plots(tmp_path: Path) -> None:
    from forecast.report.charts import PREDICTIVE

    output = tmp_path / "bt"
    result = CliRunner().invoke(app, ["backtest", str(CONFIGS / "cdnow_sample.yaml"), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "predictive" in result.output and "heuristic" in result.output
    document = json.loads((output / "backtest.json").read_text(encoding="utf-8"))
    assert document["calibration_end"] == "1997-09-30" and document["holdout_end"] == "1998-06-30"
    assert document["customers"] == 2357
    assert document["actual"]["purchases"] == 1882
    assert set(document["methods"]) == {"predictive", "heuristic", "gradient_boosting"}
    for entry in document["methods"].values():
        for key in ("predicted_purchases", "predicted_revenue", "total_revenue_error", "rmse_revenue",
                    "normalized_gini", "mae_purchases", "rmse_purchases", "mae_revenue", "spearman_revenue",
                    "top20_capture"):  # fmt: skip
            assert isinstance(entry[key], float), key
        assert len(entry["deciles"]) == 10
        assert sum(row["customers"] for row in entry["deciles"]) == pytest.approx(2357)
        assert sum(row["actual_revenue"] for row in entry["deciles"]) == pytest.approx(document["actual"]["revenue"])
    assert set(document["winner"]) == {
        "total_revenue_error", "rmse_revenue", "normalized_gini", "mae_purchases", "rmse_purchases", "mae_revenue",
        "spearman_revenue", "top20_capture",
    }  # fmt: skip
    assert document["overall_winner"]["method"] in document["methods"]
    assert f"winner: {document['overall_winner']['method']}" in result.output
    assert set(document["model_comparison"]) == {"bgnbd", "mbgnbd", "pareto"}
    assert set(document["model_selection"]["scores"]) == {"bgnbd", "mbgnbd", "pareto"}
    assert document["purchase_model"]["reason"] == document["model_selection"]["reason"]
    assert set(document["plots"]) == {"conditional_expectation", "tracking", "deciles"}
    for file_name in document["plots"].values():
        svg = (output / file_name).read_text(encoding="utf-8")
        assert "<svg" in svg and "<text" not in svg  # the report's chart style: glyphs drawn as paths
    assert PREDICTIVE in (output / document["plots"]["tracking"]).read_text(encoding="utf-8")  # the one palette
    customers = pd.read_csv(output / "backtest_customers.csv", dtype={"customer_id": str})
    assert len(customers) == 2357 and customers["actual_purchases"].sum() == 1882


def test_a_holdout_past_the_last_day_warns(sample_config: RunConfig, sample_log: pd.DataFrame) -> None:
    early = sample_log[sample_log["ts"] < pd.Timestamp("1998-03-01")]
    result = run_backtest(DuckDBLog(connection_for(early)), sample_config, CALIBRATION_END, HOLDOUT_END)
    assert any("understated" in message for message in result.warnings)
    assert result.document["warnings"] == result.warnings


def test_cli_backtest_reports_bad_dates_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["backtest", str(CONFIGS / "cdnow_sample.yaml"), "--calibration-end", "1998-07-01",
         "--holdout-end", "1998-12-31", "--output", str(tmp_path / "bt")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "leaves no data to score" in result.output
    assert not (tmp_path / "bt").exists()


@pytest.mark.slow
def test_run_with_auto_chooses_before_as_of_and_records_why(sample_config: RunConfig, tmp_path: Path) -> None:
    """`forecast run` with purchase_model auto on the CDNOW sample as of 1999-06-30 (so that its 1998 holdout is
    inside): the run's own choice is validated on the last window before as_of and is in the manifest with every
    model's score; the backtest made its own choice before its calibration_end and says so in backtest.json."""
    from forecast.batch.pipeline import run

    config = sample_config.model_copy(
        update={"purchase_model": "auto", "as_of": dt.date(1998, 6, 30), "models_dir": str(tmp_path / "models")}
    )
    result = run(config, output=tmp_path / "run")
    selection = result.manifest["model_selection"]
    scores = selection["scores"]
    assert selection["configured"] == "auto" and selection["cutoff"] == "1998-06-30"
    assert selection["chosen"] == max(scores, key=lambda name: scores[name]["log_likelihood"])
    assert result.forecast.purchases.name == selection["chosen"]
    assert selection["windows"][0]["scored_through"] == "1998-06-30"
    assert selection["reason"].startswith(f"{selection['chosen']} scores highest")
    document = json.loads((tmp_path / "run" / "backtest.json").read_text(encoding="utf-8"))
    assert document["model_selection"]["cutoff"] == CALIBRATION_END.isoformat()
    assert document["purchase_model"]["used"] == document["model_selection"]["chosen"]
    assert result.manifest["backtest"]["purchase_model"]["used"] == document["model_selection"]["chosen"]
    for file_name in document["plots"].values():
        assert (tmp_path / "run" / file_name).is_file()


def test_backtest_json_gives_the_holdout_totals_predictive_interval_and_whether_it_covered(
    sample_backtest: BacktestResult,
) -> None:
    """The CDNOW sample's holdout: expected 1,653 repeat purchases (the predictive method's total), its 90%
    predictive interval around it, wider than the parameters alone would make it (the sum of the customers'
    Poisson-like spread alone is about sqrt(1,653) = 41 purchases, so at least +-1.645 x 41), and `covered` saying
    whether the realised 1,882 lies in it."""
    interval = sample_backtest.document["holdout_interval"]
    assert interval["kind"] == "predictive" and interval["level"] == 0.9 and interval["draws"] >= 180
    purchases, revenue = interval["purchases"], interval["revenue"]
    assert purchases["expected"] == pytest.approx(1653, abs=1) and purchases["actual"] == 1882
    assert purchases["lower"] < purchases["expected"] < purchases["upper"]
    assert purchases["upper"] - purchases["lower"] > 2 * 1.645 * 41
    predicted_revenue = sample_backtest.document["methods"]["predictive"]["predicted_revenue"]
    assert revenue["expected"] == pytest.approx(predicted_revenue, rel=1e-9)
    for total in (purchases, revenue):
        assert total["covered"] == (total["lower"] <= total["actual"] <= total["upper"])
