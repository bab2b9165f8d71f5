"""The monthly batch end to end through the CLI, on the real CDNOW data that lifetimes ships."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from tests import reference as ref

CONTRACT_COLUMNS = [
    "customer_id", "frequency", "recency", "T", "monetary_value", "p_alive", "expected_purchases",
    "expected_spend", "clv", "clv_lower", "clv_upper", "clv_heuristic", "segment",
]  # fmt: skip


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result


def test_run_on_cdnow_sample_reproduces_published_fits(in_tmp, sample_config_path):
    """BG/NBD 0.2426, 4.4136, 0.7929, 2.4259 and Gamma-Gamma 6.25, 3.74, 15.44 in the manifest (tests/reference.py)."""
    result = run_cli("run", str(sample_config_path), "--output", "out")
    assert result.exit_code == 0, result.output
    out = in_tmp / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["as_of"] == "1997-09-30"
    assert manifest["time_unit"] == "week"
    assert manifest["input"]["customers"] == 2357
    purchases, spend = manifest["models"]["purchases"], manifest["models"]["spend"]
    assert purchases["name"] == "bgnbd" and purchases["converged"]
    for name, value in ref.BGNBD_CDNOW_SAMPLE.items():
        assert purchases["params"][name] == pytest.approx(value, abs=6e-5)
    for name, value in ref.GAMMA_GAMMA_CDNOW_SAMPLE.items():
        assert spend["params"][name] == pytest.approx(value, abs=6e-3)
    assert set(purchases["standard_errors"]) == {"r", "alpha", "a", "b"}
    assert isinstance(manifest["warnings"], list)

    customers = pd.read_parquet(out / "customers.parquet")
    assert list(customers.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    assert customers["customer_id"].iloc[0] == "0001"
    assert len(customers) == 2357
    csv = pd.read_csv(out / "customers.csv", dtype={"customer_id": str})
    assert csv["customer_id"].iloc[0] == "0001"
    segments = pd.read_csv(out / "segments.csv")
    everyone = segments[segments["segmentation"] == "all"].iloc[0]
    tiers = segments[segments["segmentation"] == "value_tier"]
    assert tiers["customers"].sum() == everyone["customers"] == 2357
    assert tiers["clv_total"].sum() == pytest.approx(everyone["clv_total"], abs=0.005 * (len(tiers) + 1))  # cents
    assert (in_tmp / "models" / "1997-09-30" / "purchases.json").is_file()


def test_run_on_full_cdnow_has_no_nan_or_infinite_value(in_tmp):
    """23,570 customers (docs/reference.md), with the 80 zero-value rows of CDNOW_master.txt."""
    from tests.conftest import CONFIGS

    result = run_cli("run", str(CONFIGS / "cdnow.yaml"), "--output", "out")
    assert result.exit_code == 0, result.output
    customers = pd.read_parquet(in_tmp / "out" / "customers.parquet")
    assert len(customers) == 23570
    numeric = customers.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy(dtype=float)).all()
    assert customers["p_alive"].between(0, 1).all()
    assert (customers["clv"] >= 0).all()
    manifest = json.loads((in_tmp / "out" / "manifest.json").read_text())
    assert manifest["input"]["rows"] == 69659
    assert any("80 rows have an amount of 0" in w for w in manifest["warnings"])


def test_rows_after_as_of_are_ignored(in_tmp):
    """Appending transactions after as_of (a later purchase, a new customer) changes no output."""
    import datetime as dt

    from forecast.data.simulate import simulate_transactions

    log = in_tmp / "log.csv"
    simulate_transactions(500, end=dt.date(2020, 12, 31), seed=3).to_csv(log, index=False)
    config = in_tmp / "run.yaml"
    config.write_text(f"data: {{path: {log}}}\ntime_unit: week\nmargin: 0.5\n", encoding="utf-8")
    result = run_cli("run", str(config), "--as-of", "2020-09-30", "--output", "a")
    assert result.exit_code == 0, result.output
    with log.open("a") as handle:
        handle.write("0000000001,2020-10-03 10:00:00,999\nnew,2020-11-05 12:00:00,5\n")
    result = run_cli("run", str(config), "--as-of", "2020-09-30", "--output", "b")
    assert result.exit_code == 0, result.output
    a = pd.read_parquet(in_tmp / "a" / "customers.parquet")
    b = pd.read_parquet(in_tmp / "b" / "customers.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_user_errors_exit_non_zero_without_traceback(in_tmp):
    config = in_tmp / "bad.yaml"
    config.write_text("data: {path: missing.csv}\nhorizon: 3\n", encoding="utf-8")
    result = run_cli("run", str(config))
    assert result.exit_code == 2
    assert "unknown key 'horizon'" in result.output
    assert "Traceback" not in result.output
    config.write_text("data: {path: missing.csv}\n", encoding="utf-8")
    result = run_cli("run", str(config))
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (in_tmp / "runs").exists()


def test_validate_prints_a_data_quality_summary(sample_config_path):
    result = run_cli("validate", str(sample_config_path))
    assert result.exit_code == 0, result.output
    assert "6,919 of 6,919 rows used, 2,357 customers" in result.output
    assert "8 rows have an amount of 0" in result.output


def test_run_never_backtests_past_its_as_of(in_tmp, sample_config_path):
    """The sample's 39-week holdout lies after its as_of: the run leaves it to `forecast backtest` and says so."""
    result = run_cli("run", str(sample_config_path), "--output", "out")
    assert result.exit_code == 0, result.output
    assert not (in_tmp / "out" / "backtest.json").exists()
    manifest = json.loads((in_tmp / "out" / "manifest.json").read_text())
    assert any("run `forecast backtest` for it" in w for w in manifest["warnings"])


def test_pareto_forecasts_are_reproducible(sample_config_path):
    """lifetimes' Pareto/NBD fit starts from NumPy's global generator: the run seeds it (config seed)."""
    import datetime as dt

    from forecast.batch.pipeline import forecast
    from forecast.config import load_config
    from forecast.data.ingest import read_transactions

    config = load_config(sample_config_path).model_copy(update={"purchase_model": "pareto", "interval_draws": 0})
    transactions = read_transactions(config.data)
    np.random.seed(1)  # noqa: NPY002 (whatever state the caller left, the fit is the same)
    first = forecast(config, transactions, dt.date(1998, 6, 30)).purchases.params_
    np.random.seed(2)  # noqa: NPY002
    second = forecast(config, transactions, dt.date(1998, 6, 30)).purchases.params_
    assert first == second


def test_a_degenerate_fit_is_named_as_such(in_tmp, sample_config_path):
    """Two months of the sample fit a, b near 0 (no invertible information): the error says so, not 'heavy buyers'."""
    result = run_cli("run", str(sample_config_path), "--as-of", "1997-02", "--output", "feb")
    assert result.exit_code == 2
    assert "the fit itself is degenerate" in result.output and "Traceback" not in result.output
    assert "heavy buyers" not in result.output


def test_an_extreme_customer_is_named_and_data_exclude_customers_leaves_it_out(tmp_path, cdnow_sample):
    """A guest-checkout account buying every day (546 purchase days to 1998-06-30, the sample's others at most
    a few dozen) pulls BG/NBD's r down by 7%: the run warns naming it and the key that leaves it out; with the id under
    data.exclude_customers its rows are counted as left out and the fit is the sample's own."""
    import datetime as dt

    from forecast.batch.pipeline import run
    from forecast.config import load_config
    from tests.batch.conftest import write_config, write_csv

    days = pd.date_range("1997-01-01", "1998-06-30", freq="D").strftime("%Y-%m-%d")
    guest = pd.DataFrame({"customer_id": "guest", "timestamp": days, "amount": "12.50"})
    log = write_csv(pd.concat([cdnow_sample, guest], ignore_index=True), tmp_path / "log.csv")
    with_guest = run(load_config(write_config(tmp_path / "a", log)), dt.date(1998, 6, 30))
    warned = [m for m in with_guest.forecast.warnings if "lie far beyond all others" in m]
    assert len(warned) == 1 and "'guest' (545 repeat purchases" in warned[0] and "data.exclude_customers" in warned[0]

    data = {"path": str(log), "exclude_customers": ["guest", "nobody"]}
    without = run(load_config(write_config(tmp_path / "b", data)), dt.date(1998, 6, 30))
    assert "guest" not in without.forecast.customers.index
    assert not [m for m in without.forecast.warnings if "lie far beyond all others" in m]
    assert "546 rows of 1 customer(s) listed in data.exclude_customers were left out. Not in the log: 'nobody'." in (
        without.forecast.warnings
    )
    reference = run(load_config(write_config(tmp_path / "c", write_csv(cdnow_sample, tmp_path / "c.csv"))),
                    dt.date(1998, 6, 30))  # fmt: skip
    assert without.forecast.purchases.params_ == pytest.approx(reference.forecast.purchases.params_, rel=1e-12)
    assert with_guest.forecast.purchases.params_["r"] < 0.95 * reference.forecast.purchases.params_["r"]  # 0.237, 0.254


def test_a_fit_that_fails_with_an_extreme_customer_names_it(tmp_path, cdnow_sample, monkeypatch):
    """When the fit fails (here made to fail) on a log with an extreme customer, the FitError names that customer
    and data.exclude_customers, instead of advising only a longer calibration period."""
    import datetime as dt

    import forecast.batch.pipeline as pipeline
    from forecast.config import load_config
    from forecast.errors import FitError
    from tests.batch.conftest import write_config, write_csv

    days = pd.date_range("1997-01-01", "1998-06-30", freq="D").strftime("%Y-%m-%d")
    guest = pd.DataFrame({"customer_id": "guest", "timestamp": days, "amount": "12.50"})
    log = write_csv(pd.concat([cdnow_sample, guest], ignore_index=True), tmp_path / "log.csv")

    def failing_fit(*args, **kwargs):
        raise FitError("The Gamma-Gamma model did not converge on 2,358 customers.")

    monkeypatch.setattr(pipeline, "fit_on_histories", failing_fit)
    with pytest.raises(
        FitError, match=r"did not converge on 2,358 customers\. 1 customer\(s\) lie far beyond .*'guest'"
    ):
        pipeline.run(load_config(write_config(tmp_path, log)), dt.date(1998, 6, 30))


@pytest.mark.parametrize("extreme", ["guest", "typo"])
def test_a_shared_id_or_an_absurd_one_time_amount_is_named_by_the_run(tmp_path, extreme):
    """The two cases the audit of issue 21 found unnamed, through a run: a guest-checkout id with 100,000 purchases
    on 546 days beside 2,000 customers (under 20 times their 99th percentiles of purchases and spend, yet most of
    the predictive CLV), and a one-time buyer's amount of 1e20. The run warns naming the id and
    data.exclude_customers."""
    import datetime as dt

    from forecast.batch.pipeline import run
    from forecast.config import load_config
    from tests.batch.conftest import write_config, write_csv
    from tests.data.test_extreme_customers import guest_checkout, simulated

    if extreme == "guest":
        extra = guest_checkout()
        log = pd.concat([simulated(alpha=3.0, gamma=18.0), extra], ignore_index=True)
    else:
        extra = pd.DataFrame({"customer_id": ["typo"], "timestamp": [pd.Timestamp("2021-03-03 10:00")], "amount": 1e20})
        log = pd.concat([simulated(), extra], ignore_index=True)
    path = write_csv(log, tmp_path / "log.csv")
    result = run(load_config(write_config(tmp_path, path, interval_draws=0)), dt.date(2021, 6, 30))
    warned = [m for m in result.forecast.warnings if "lie far beyond all others" in m]
    assert len(warned) == 1 and f"'{extreme}' (" in warned[0] and "data.exclude_customers" in warned[0]
    customers = result.forecast.customers
    if extreme == "guest":
        assert customers.loc["guest", "clv"] > 0.8 * customers["clv"].sum()
