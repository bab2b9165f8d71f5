"""Fitted-model artifacts: JSON round trips, schema and version checks, no unpickling, a run's models read back."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from forecast.batch.pipeline import run
from forecast.config import load_config
from forecast.data.ingest import read_transactions
from forecast.data.summary import summarize
from forecast.errors import ArtifactError
from forecast.models import BetaGeo, GammaGamma, fit_models
from forecast.models.artifacts import SCHEMA_VERSION, library_versions, load_model, model_artifact, write_json
from forecast.report.run_folder import read_models, read_run

ROOT = Path(__file__).resolve().parents[2]
WINDOW = {"first_purchase": "1997-01-01", "as_of": "1997-09-30"}


@pytest.fixture(scope="module")
def fitted():
    """BG/NBD and Gamma-Gamma fitted on the CDNOW sample, calibration weeks 1-39 (Fader, Hardie & Lee 2005)."""
    config = load_config(ROOT / "configs" / "cdnow_sample.yaml")
    summary = summarize(read_transactions(config.data).connection, dt.date(1997, 9, 30), 7.0)
    purchases, spend = fit_models(summary, "bgnbd")
    return summary, purchases, spend


def test_round_trip_predicts_identically(tmp_path: Path, fitted) -> None:
    """load_model(JSON) gives bit-identical predictions to the fitted models (r = 0.2426 as in FHL 2005)."""
    summary, purchases, spend = fitted
    assert purchases.params_["r"] == pytest.approx(0.2426, abs=1e-3)
    write_json(tmp_path / "purchases.json", model_artifact(purchases, "purchases", WINDOW))
    write_json(tmp_path / "spend.json", model_artifact(spend, "spend", WINDOW))
    purchases_again = load_model(tmp_path / "purchases.json")
    spend_again = load_model(tmp_path / "spend.json")
    assert isinstance(purchases_again, BetaGeo) and isinstance(spend_again, GammaGamma)
    x, t_x, T = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    np.testing.assert_array_equal(
        purchases_again.expected_purchases(39, x, t_x, T), purchases.expected_purchases(39, x, t_x, T)
    )
    np.testing.assert_array_equal(purchases_again.p_alive(x, t_x, T), purchases.p_alive(x, t_x, T))
    m = summary["monetary_value"].to_numpy()
    np.testing.assert_array_equal(spend_again.expected_spend(x, m), spend.expected_spend(x, m))
    assert purchases_again.result_ == purchases.result_
    write_json(tmp_path / "again.json", model_artifact(purchases_again, "purchases", WINDOW))
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "purchases.json").read_bytes()


def _artifact(tmp_path: Path, fitted, **changes) -> Path:
    document = model_artifact(fitted[1], "purchases", WINDOW)
    document.update(changes)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_refuses_another_schema_version(tmp_path: Path, fitted) -> None:
    with pytest.raises(ArtifactError, match=f"schema version {SCHEMA_VERSION + 1}"):
        load_model(_artifact(tmp_path, fitted, schema_version=SCHEMA_VERSION + 1))


def test_refuses_another_lifetimes_minor_version(tmp_path: Path, fitted) -> None:
    installed = library_versions()["lifetimes"]
    major, minor, *_ = installed.split(".")
    newer = {**library_versions(), "lifetimes": f"{major}.{int(minor) + 1}.0"}
    with pytest.raises(ArtifactError, match=rf"lifetimes {major}\.{int(minor) + 1}\.0.*major\.minor"):
        load_model(_artifact(tmp_path, fitted, versions=newer))
    with pytest.raises(ArtifactError, match="no library versions"):
        load_model(_artifact(tmp_path, fitted, versions=None))
    patched = {**library_versions(), "lifetimes": f"{major}.{minor}.99"}
    assert isinstance(load_model(_artifact(tmp_path, fitted, versions=patched)), BetaGeo)


def test_a_run_read_back_gives_its_tables_and_models_and_refuses_a_changed_model(tmp_path: Path) -> None:
    document = yaml.safe_load((ROOT / "configs" / "cdnow_sample.yaml").read_text())
    document.update(output=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    result = run(load_config(tmp_path / "config.yaml"))
    stored = read_run(result.output)
    purchases, _spend = read_models(stored)
    assert stored.as_of == dt.date(1997, 9, 30)
    assert len(stored.customers) == 2357
    assert purchases.result_ == result.forecast.purchases.result_
    assert stored.customers["clv"].sum() == pytest.approx(result.manifest["totals"]["clv"], rel=1e-12)

    model = result.output / "models" / "purchases.json"
    tampered = json.loads(model.read_text())
    tampered["params"]["r"] *= 2
    write_json(model, tampered)
    with pytest.raises(ArtifactError, match="does not match the SHA-256"):
        read_models(read_run(result.output))
    (result.output / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="not a finished run"):
        read_run(result.output)
