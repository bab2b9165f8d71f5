"""Tests of forecast.report.run_folder: the one reader of a finished run folder (tables, backtest, models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.errors import ArtifactError
from forecast.models import BetaGeo, GammaGamma
from forecast.report.run_folder import (
    MODEL_FILES,
    RUN_ENTRIES,
    RUN_MODELS,
    read_customers,
    read_manifest,
    read_models,
    read_run,
)


def test_a_run_writes_only_the_entries_the_layout_names(sample_run: Path) -> None:
    """Every file of a run folder is in RUN_ENTRIES, the only names ``--force`` may replace."""
    assert {entry.name for entry in sample_run.iterdir()} <= RUN_ENTRIES


def test_read_run_gives_customers_indexed_by_id_and_the_segment_table(sample_run: Path) -> None:
    folder = read_run(sample_run)
    assert folder.as_of.isoformat() == "1997-09-30"
    assert folder.customers.index.name == "customer_id" and len(folder.customers) == 2357
    assert folder.customers.index.dtype == "string"
    assert folder.segments is not None and folder.segments["segmentation"].iloc[0] == "all"
    assert folder.backtest is None and folder.notes == []


def test_read_customers_reads_only_the_columns_asked_for_that_the_file_holds(sample_run: Path) -> None:
    """Without customer_id among them, the table keeps a plain index (the report reads no ids)."""
    customers = read_customers(sample_run / "customers.parquet", ["clv", "p_alive", "not_a_column"])
    assert list(customers.columns) == ["clv", "p_alive"]
    assert isinstance(customers.index, pd.RangeIndex)


def test_segment_labels_stay_text(run_copy: Path) -> None:
    """A segment labelled "NA" (a country code, say) is a label, not a missing value."""
    segments = pd.read_csv(run_copy / "segments.csv")
    segments.loc[segments.index[-1], "segment"] = "NA"
    segments.to_csv(run_copy / "segments.csv", index=False)
    folder = read_run(run_copy)
    assert folder.segments is not None and folder.segments["segment"].iloc[-1] == "NA"


def test_segments_of_a_run_written_with_the_old_segmentation_names_read_with_the_new_ones(run_copy: Path) -> None:
    """Runs written before the rename labelled the value tiers ``segment`` and the RFM groups ``rfm_group``: read
    back, they are ``value_tier`` and ``rfm``, and a data segment column keeps its name."""
    segments = pd.read_csv(run_copy / "segments.csv")
    assert {"all", "value_tier", "rfm"} <= set(segments["segmentation"])
    old = segments.replace({"segmentation": {"value_tier": "segment", "rfm": "rfm_group"}})
    old.loc[old.index[-1], "segmentation"] = "region"
    old.to_csv(run_copy / "segments.csv", index=False)
    folder = read_run(run_copy)
    assert folder.segments is not None
    expected = [*segments["segmentation"].iloc[:-1], "region"]
    assert folder.segments["segmentation"].tolist() == expected


def test_read_models_reads_the_run_copy_and_refuses_a_changed_file(run_copy: Path) -> None:
    folder = read_run(run_copy)
    purchases, spend = read_models(folder)
    assert isinstance(purchases, BetaGeo) and isinstance(spend, GammaGamma)
    assert purchases.params_ == folder.manifest["models"]["purchases"]["params"]
    model_file = run_copy / RUN_MODELS / MODEL_FILES["purchases"]
    document = json.loads(model_file.read_text())
    document["params"]["r"] *= 2
    model_file.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="does not match the SHA-256"):
        read_models(read_run(run_copy))


def test_read_models_falls_back_to_the_manifest_without_a_run_copy(run_copy: Path) -> None:
    """A Spark run folder holds no models/ copy: the models recorded in the manifest are used."""
    expected = read_models(read_run(run_copy))
    shutil.rmtree(run_copy / RUN_MODELS)
    purchases, spend = read_models(read_run(run_copy))
    assert purchases.params_ == expected[0].params_ and spend.params_ == expected[1].params_


def test_a_folder_without_a_readable_manifest_is_not_a_run(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    with pytest.raises(ArtifactError, match=r"no manifest\.json, so it is not a finished run"):
        read_run(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    assert read_manifest(tmp_path) is None
    with pytest.raises(ArtifactError, match="not a run manifest"):
        read_run(tmp_path)


def test_a_hand_edited_manifest_is_named_as_such_by_forecast_report(run_copy: Path) -> None:
    """A manifest whose entries no longer have their types (here totals and as_of edited by hand) used to end
    `forecast report` with an AttributeError; it is exit 2 saying which entries changed and what to do."""
    manifest = json.loads((run_copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["totals"], manifest["as_of"] = "lots", "June"
    (run_copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    outcome = CliRunner().invoke(app, ["report", str(run_copy)])
    assert outcome.exit_code == 2, outcome.output
    assert "was changed after its run wrote it: 'totals' is str, not dict; 'as_of' is 'June'" in outcome.output
    assert "Traceback" not in outcome.output and "unexpected" not in outcome.output


@pytest.mark.parametrize(
    ("where", "value", "named"),
    [
        (["totals", "clv"], "x", "'totals.clv' is \"x\", not a number"),
        (["totals"], {}, "'totals' has no 'clv'"),
        (["horizon_months"], -5, "'horizon_months' is -5, not a whole number from 1 to 600"),
        (["horizon_months"], 10**30, "'horizon_months' is 1000000000000000000000000000000, not a whole number"),
        (["horizon_months"], 1e30, "'horizon_months' is float, not int"),
        (["time_unit"], "fortnight", "'time_unit' is \"fortnight\", not day, week or month"),
        (["models", "purchases", "log_likelihood"], "high", "'models.purchases.log_likelihood' is \"high\""),
        (["models", "sha256"], ["abc"], "'models.sha256' is [\"abc\"], not the SHA-256"),
        (["comparison", "gap"], None, "'comparison.gap' is null, not a number"),
        (["comparison", "net"], {"gap": 1.0}, "'comparison.net' has no 'cost_per_purchase'"),
        (["heuristic"], None, "'heuristic' is null, not dict"),
    ],
)
def test_forecast_report_names_a_nested_manifest_value_edited_by_hand(
    run_copy: Path, where: list[str], value: object, named: str
) -> None:
    """Values inside the manifest's entries, edited by hand, used to end `forecast report` with "an unexpected error:
    ValueError ... report it" (totals.clv "x"), a misleading error (horizon_months 1e30), or exit 0 with a report
    rebuilt from them (horizon_months -5, time_unit "fortnight", totals {}). Each is exit 2 naming the key, and the
    report is left as the run wrote it."""
    manifest = json.loads((run_copy / "manifest.json").read_text(encoding="utf-8"))
    parent = manifest
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    (run_copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    report = (run_copy / "report.html").read_bytes()
    outcome = CliRunner().invoke(app, ["report", str(run_copy)])
    message = " ".join(outcome.output.split())
    assert outcome.exit_code == 2, outcome.output
    assert "manifest.json was changed after its run wrote it: " in message and named in message
    assert "Traceback" not in message and "unexpected" not in message
    assert (run_copy / "report.html").read_bytes() == report
