"""The Spark engine on a real standalone cluster (a master and two workers started on localhost from the pyspark
install) and through Spark Connect (a local Connect server), the run made by the console script's absolute path (no
activated venv), every output compared with the DuckDB engine's run of the same config.

The executors are separate processes started by the workers: they read the log, score the customers and write
customers.parquet to ``spark.output`` (a ``file://`` URI, the mount every "node" of this cluster shares).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from forecast.batch.pipeline import run as run_duckdb
from forecast.config import RunConfig
from forecast.data.simulate import write_simulated_log
from forecast.report.build import build_report
from tests.conftest import CONFIGS
from tests.engines.parity import (
    CSV_ABSOLUTE,
    CSV_RELATIVE,
    SPARK_MISSING_FILES,
    SPARK_MISSING_MANIFEST_KEYS,
    assert_close,
    assert_same_backtest,
    assert_same_record,
    assert_same_totals,
    report_text,
    run_console_script,
)
from tests.engines.standalone import standalone_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A standalone master and two one-core workers on 127.0.0.1, stopped (with their executors) at the end."""
    with standalone_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


def cdnow_config() -> dict[str, Any]:
    """configs/cdnow.yaml as shipped: the full CDNOW cohort, purchase_model auto, a backtest section."""
    document: dict[str, Any] = yaml.safe_load((CONFIGS / "cdnow.yaml").read_text(encoding="utf-8"))
    return document


def simulated_config(tmp_path: Path) -> dict[str, Any]:
    """A simulated log of 3,000 customers ending mid-month, as_of left to default (the end of May on both engines:
    Spark took the log's last day), with costs of serving (net columns) and an acquisition cost (payback)."""
    path = tmp_path / "log.parquet"
    write_simulated_log(path, 3_000, end=dt.date(2021, 6, 17), seed=5)
    return {
        "data": {"path": str(path)}, "margin": 0.25, "heuristic": {"lifespan_years": "auto"},
        "costs": {"per_purchase": 1.5, "per_active_month": 0.25}, "budget": {"cac": 12},
    }  # fmt: skip


def run_both(
    tmp_path: Path, document: dict[str, Any], master: str | None = None, remote: str | None = None
) -> tuple[Path, Path, dict[str, Any]]:
    """Run ``document`` with DuckDB in this process and with Spark (on ``master``, or on the Spark Connect server
    ``remote``) through the console script; return the two run folders and the Spark run's manifest."""
    document = {**document, "output": str(tmp_path / "runs"), "models_dir": str(tmp_path / "models")}
    duck = run_duckdb(RunConfig.model_validate({**document, "output": str(tmp_path / "duckdb")}))
    where = {"master": master} if master else {"remote": remote}
    conf = {"spark.sql.shuffle.partitions": "4"} | ({} if remote else {"spark.ui.enabled": "false"})
    spark_document = {**document, "spark": {**where, "output": (tmp_path / "shared").as_uri(), "conf": conf}}
    done = run_console_script(tmp_path, spark_document)
    assert done.returncode == 0, done.stderr[-4000:]
    spark_folder = tmp_path / "runs" / duck.forecast.as_of.isoformat()  # the month's folder, as DuckDB's
    manifest = json.loads((spark_folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["engine"] == "spark" and manifest["as_of"] == duck.forecast.as_of.isoformat()
    return duck.output, spark_folder, manifest


def customers_of(path: Path | str) -> pd.DataFrame:
    return pd.read_parquet(str(path).removeprefix("file://")).set_index("customer_id")


def assert_same_run(duckdb_folder: Path, spark_folder: Path, manifest: dict[str, Any]) -> None:
    """Every per-customer column Spark writes equals DuckDB's, in DuckDB's order; segments, models and totals too."""
    expected = customers_of(duckdb_folder / "customers.parquet")
    actual = customers_of(manifest["customers_parquet"])
    assert manifest["customers_parquet"].startswith("file://")  # written by the executors to the shared mount
    # in the run's own folder under spark.output, which only this run's manifest points to
    assert re.search(r"/shared/\d{4}-\d\d-\d\d/\d{8}T\d+Z-\d+/customers\.parquet$", manifest["customers_parquet"])
    spark_files = {p.name for p in spark_folder.iterdir()}
    assert spark_files == {p.name for p in duckdb_folder.iterdir()} - SPARK_MISSING_FILES - {"customers.parquet"}
    assert list(actual.columns) == list(expected.columns)
    assert_close(actual, expected)
    duck_manifest = json.loads((duckdb_folder / "manifest.json").read_text(encoding="utf-8"))
    for role in ("purchases", "spend"):
        ours, theirs = manifest["models"][role], duck_manifest["models"][role]
        assert ours["name"] == theirs["name"]
        for name, value in theirs["params"].items():
            assert ours["params"][name] == pytest.approx(value, rel=1e-7), (role, name)
    assert set(manifest) == set(duck_manifest) - SPARK_MISSING_MANIFEST_KEYS | {"customers_parquet", "engine"}
    assert_same_totals(manifest["totals"], duck_manifest["totals"])
    for name in ("purchases.json", "spend.json"):  # the run's own copy is the published one
        assert (spark_folder / "models" / name).read_bytes() == (Path(manifest["models"]["path"]) / name).read_bytes()
    assert "Fitting" in (spark_folder / "run.log").read_text(encoding="utf-8")
    assert_same_record(manifest["comparison"], duck_manifest["comparison"])
    assert manifest["intervals"] == duck_manifest["intervals"]
    assert manifest["intervals"]["totals"] == "predictive"
    segments_expected = pd.read_csv(duckdb_folder / "segments.csv", keep_default_na=False)
    segments_actual = pd.read_csv(spark_folder / "segments.csv", keep_default_na=False)
    assert list(segments_actual.columns) == list(segments_expected.columns)
    assert_close(segments_actual, segments_expected, rtol=CSV_RELATIVE, atol=CSV_ABSOLUTE)
    if (duckdb_folder / "backtest.json").exists():
        assert_same_backtest(spark_folder, duckdb_folder)
    # The report, written during the run from the compressed summary, says what DuckDB's says.
    for section in ("headline", "model-fit", "segments"):
        assert report_text(spark_folder, section) == report_text(duckdb_folder, section), section


def test_the_cdnow_config_on_a_standalone_cluster_gives_the_duckdb_run(cluster: str, tmp_path: Path) -> None:
    duckdb_folder, spark_folder, manifest = run_both(tmp_path, cdnow_config(), cluster)
    assert manifest["input"]["customers"] == 23_570
    assert manifest["model_selection"]["chosen"] == "mbgnbd"  # auto, validated on the cluster's window counts
    assert manifest["backtest"]["calibration_end"] == "1997-09-30"  # the config's backtest section, run on Spark
    assert_same_run(duckdb_folder, spark_folder, manifest)


def test_a_simulated_log_on_a_standalone_cluster_gives_the_duckdb_run(cluster: str, tmp_path: Path) -> None:
    duckdb_folder, spark_folder, manifest = run_both(tmp_path, simulated_config(tmp_path), cluster)
    assert manifest["as_of"] == "2021-05-31"
    assert_same_run(duckdb_folder, spark_folder, manifest)
    # The report reads the customers where the manifest says they are (the shared mount, not the run folder).
    assert not (spark_folder / "customers.parquet").exists()
    build_report(spark_folder)
    assert "Customers 3,000" in report_text(spark_folder, "headline")


def test_a_simulated_log_through_spark_connect_gives_the_duckdb_run(tmp_path: Path) -> None:
    """spark.remote: the run goes through a Spark Connect server (here one the run starts locally; on Databricks
    serverless or a shared cluster, sc://...), which has no SparkContext and no RDDs: the package travels as an
    artifact, everything else is DataFrame operations."""
    duckdb_folder, spark_folder, manifest = run_both(tmp_path, simulated_config(tmp_path), remote="local[2]")
    assert manifest["config"]["spark"]["remote"] == "local[2]"
    assert_same_run(duckdb_folder, spark_folder, manifest)
