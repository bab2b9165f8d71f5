"""A run that degrades, not dies: when the configured models cannot be fitted, the run publishes the fallback's
outputs and says so (forecast.models.catalog).

Logs: the CDNOW 2,357-customer sample with its amounts replaced by hand (spend that Gamma-Gamma cannot fit), and
2,000 customers simulated without dropout (``tests.nbd_process``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from tests.batch.conftest import write_config, write_csv
from tests.nbd_process import NBD_TRUTH, nbd_transactions


def run_cli(folder: Path, log: pd.DataFrame, **settings: object) -> tuple[dict, pd.DataFrame]:
    """`forecast run` on ``log`` (exit 0 asserted); the manifest and customers.parquet of the run."""
    config = write_config(folder, write_csv(log, folder / "log.csv"), **settings)
    outcome = CliRunner().invoke(app, ["run", str(config)])
    assert outcome.exit_code == 0, outcome.output
    (run,) = (folder / "runs").iterdir()
    assert (run / "report.html").is_file()
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    return manifest, pd.read_parquet(run / "customers.parquet")


def one_purchase_a_day(cdnow_sample: pd.DataFrame) -> pd.DataFrame:
    """The CDNOW sample with one row per customer and day (day resolution then keeps each row's amount)."""
    days = cdnow_sample.assign(timestamp=pd.to_datetime(cdnow_sample["timestamp"]).dt.strftime("%Y-%m-%d"))
    return days.drop_duplicates(["customer_id", "timestamp"]).sort_values(["customer_id", "timestamp"])


def test_every_repeat_buyer_with_the_same_average_spend_publishes_the_mean_spend(tmp_path, cdnow_sample):
    log = one_purchase_a_day(cdnow_sample).assign(amount=20.0)
    manifest, customers = run_cli(tmp_path, log, purchase_model="bgnbd")
    assert manifest["models"]["spend"]["name"] == "mean_spend"
    assert manifest["models"]["spend"]["params"] == {"mean": 20.0}
    assert manifest["models"]["purchases"]["name"] == "bgnbd"
    (warning,) = [w for w in manifest["warnings"] if "Gamma-Gamma spend model could not be fitted" in w]
    assert "same average spend" in warning and "'mean_spend'" in warning and "intervals are left empty" in warning
    assert np.isfinite(customers["clv"]).all() and (customers["expected_spend"] == 20.0).all()
    assert customers["clv_lower"].isna().all()


def test_gamma_gamma_that_does_not_converge_publishes_the_fit_with_shrinkage(tmp_path, cdnow_sample):
    """Repeat purchases alternate 19 and 21 for every customer: repeat buyers' averages are nearly alike, so the
    Gamma-Gamma likelihood runs off to q -> infinity."""
    log = one_purchase_a_day(cdnow_sample)
    purchase = log.groupby("customer_id").cumcount().to_numpy()
    log = log.assign(amount=np.where(purchase == 0, 20.0, np.where(purchase % 2 == 1, 19.0, 21.0)))
    manifest, customers = run_cli(tmp_path, log, purchase_model="bgnbd")
    spend = manifest["models"]["spend"]
    assert spend["name"] == "gamma_gamma" and spend["shrinkage"] == 0.01
    (warning,) = [w for w in manifest["warnings"] if "Gamma-Gamma spend model could not be fitted" in w]
    assert "did not converge" in warning and "fitted with shrinkage 0.01" in warning
    assert np.isfinite(customers["clv"]).all()
    assert customers["expected_spend"].between(19.0, 21.0).all()
    assert np.isfinite(customers["clv_lower"]).all()  # the shrunk fit has a covariance: intervals as usual


@pytest.mark.parametrize("purchase_model", ["bgnbd", "pareto"])
def test_a_log_without_visible_dropout_publishes_the_nbd(tmp_path, purchase_model):
    """2,000 customers who never drop out: the NBD is fitted and published, within three standard errors of the
    simulated r and alpha. (The configured model is not validated against the others: Pareto/NBD's fit on these
    data wanders off to s, beta -> infinity, which takes minutes.)"""
    manifest, customers = run_cli(
        tmp_path, nbd_transactions(2000, seed=0), purchase_model=purchase_model,
        model_selection={"check_configured": False},
    )  # fmt: skip
    purchases = manifest["models"]["purchases"]
    assert purchases["name"] == "nbd"
    for name, truth in NBD_TRUTH.items():
        assert abs(purchases["params"][name] - truth) < 3 * purchases["standard_errors"][name]
    (warning,) = [w for w in manifest["warnings"] if w.startswith("No visible dropout")]
    assert "likelihood is highest as" in warning and "P(alive) is 1 for everyone" in warning
    assert (customers["p_alive"] == 1.0).all()
    assert np.isfinite(customers[["clv", "clv_lower", "clv_upper"]].to_numpy()).all()
