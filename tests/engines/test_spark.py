"""The Spark engine gives the DuckDB engine's numbers on the same data (local mode, one shared session).

Reference values are the DuckDB engine's own outputs on the same logs; the tolerance (1e-9 relative)
covers sums taken in a different order.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from forecast.batch.drift import MOVEMENT_KEYS, customer_flows, movements
from forecast.batch.pipeline import run as run_duckdb
from forecast.cli import app
from forecast.config import DataConfig, RunConfig, SparkConfig
from forecast.data.ingest import read_transactions
from forecast.data.simulate import write_simulated_log
from forecast.data.summary import summarize as summarize_duckdb
from forecast.engines.spark import (
    boundary_keys,
    check_output_shared,
    segment_sums,
    ship_package,
    spark_master,
    spark_remote,
    spark_session,
    summarize,
    typed_log,
)
from forecast.engines.spark import run as run_spark
from forecast.engines.spark_drift import movements as spark_movements
from forecast.engines.spark_frames import in_segment_order, to_pandas
from forecast.engines.spark_log import SparkLog
from forecast.errors import ConfigError, DataError
from forecast.evaluation.log_queries import DuckDBLog
from forecast.evaluation.selection import Window
from forecast.value.budget import segment_budget_sums
from forecast.value.clv import assign_tiers
from forecast.value.segments import SegmentCells, customer_totals, segment_table, table_of_totals
from tests.conftest import CONFIGS
from tests.engines.parity import (
    CSV_ABSOLUTE,
    CSV_RELATIVE,
    RELATIVE,
    assert_close,
    assert_same_backtest,
    assert_same_record,
    assert_same_totals,
    assert_same_value,
    report_text,
    run_console_script,
)

pytestmark = pytest.mark.slow
END = dt.date(2021, 6, 30)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local SparkSession for the whole test session (starting one takes seconds)."""
    session = spark_session(
        SparkConfig(master="local[2]", conf={"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"})
    )
    ship_package(session)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def simulated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spark") / "sim.parquet"
    write_simulated_log(path, 3_000, end=END, seed=99)
    return path


def spark_summary(spark: object, data: DataConfig, as_of: dt.date, resolution: str) -> pd.DataFrame:
    log, _ = typed_log(spark, data)  # type: ignore[arg-type]
    frame = to_pandas(summarize(log, as_of, 7.0, resolution, list(data.segment_columns)))
    frame["first_purchase"] = pd.to_datetime(frame["first_purchase"])
    frame["last_purchase"] = pd.to_datetime(frame["last_purchase"])
    return frame.set_index("customer_id").sort_index()


@pytest.mark.parametrize("resolution", ["day", "exact"])
def test_spark_summary_equals_duckdb_summary_on_a_simulated_log(
    spark: object, simulated_log: Path, resolution: str
) -> None:
    data = DataConfig(path=str(simulated_log))
    expected = summarize_duckdb(read_transactions(data).connection, END, 7.0, resolution)
    actual = spark_summary(spark, data, END, resolution)
    assert len(expected) == 3_000
    assert_close(actual[expected.columns], expected)


def test_spark_summary_equals_duckdb_on_same_day_purchases_returns_and_segments(spark: object, write_log) -> None:
    """Same-day purchases merge, a return nets into its day, later rows are ignored, empty ids are dropped."""
    rows = [
        ("a", "2024-01-01 09:00:00", 10.0), ("a", "2024-01-01 17:00:00", 5.0), ("a", "2024-01-15", 20.0),
        ("a", "2024-01-15", -4.0), ("a", "2024-03-01", 7.5), ("b", "2024-02-01", 12.0),
        ("c", "2024-01-10", 3.0), ("c", "2024-02-20", 9.0), ("c", "2024-05-01", 99.0), ("", "2024-01-02", 1.0),
    ]  # fmt: skip
    path = write_log([(*row, "north" if row[0] != "b" else "south") for row in rows])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["customer_id,timestamp,amount,region", *lines[1:]]) + "\n")
    data = DataConfig(path=str(path), segment_columns=["region"])
    as_of = dt.date(2024, 3, 31)
    expected = summarize_duckdb(read_transactions(data).connection, as_of, 7.0, "day", ["region"])
    actual = spark_summary(spark, data, as_of, "day")
    assert_close(actual[expected.columns], expected)
    assert expected.loc["a", "frequency"] == 2
    assert expected.loc["a", "monetary_value"] == pytest.approx((16.0 + 7.5) / 2)


def test_spark_invalid_timestamps_are_a_data_error_quoting_them(spark: object, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("customer_id,timestamp,amount\n1,2020-01-01,5\n2,not a date,3\n3,2020-13-45,4\n")
    with pytest.raises(DataError, match=r"2 of 3 rows .* examples: \['not a date', '2020-13-45'\]"):
        typed_log(spark, DataConfig(path=str(path)))  # type: ignore[arg-type]


def test_spark_typed_log_has_only_the_log_columns(spark: object, write_log) -> None:
    path = write_log([("a", "2024-01-01", 10.0), ("b", "2024-01-02", 5.0)])
    log, quality = typed_log(spark, DataConfig(path=str(path)))  # type: ignore[arg-type]
    assert log.columns == ["customer_id", "ts", "amount"]
    assert (quality.rows, quality.customers) == (2, 2)


#: Value tiers whose configured order is not their alphabetical one, and one tier with no customers.
TIERS = {"top": 0.2, "empty": 0.0, "middle": 0.3, "bottom": 0.5}
#: Data segment labels that sort differently by case, digits and accents; None is a missing segment.
REGIONS = ["north", "South", "east", "10", "9", "\u00e9", "", None]


def scored_customers(count: int = 400) -> pd.DataFrame:
    """Customers with the columns a segment table adds up, value tiers and a data segment column (``REGIONS``)."""
    rng = np.random.default_rng(7)
    customers = pd.DataFrame(
        {
            "revenue": rng.gamma(2.0, 50.0, count), "p_alive": rng.random(count),
            "expected_purchases": rng.gamma(1.0, 2.0, count), "clv": rng.gamma(2.0, 100.0, count),
            "avg_purchase_value": rng.gamma(2.0, 30.0, count), "purchases_per_year": rng.gamma(2.0, 2.0, count),
            "frequency": rng.poisson(2.0, count), "monetary_value": rng.gamma(2.0, 20.0, count),
            "expected_spend": rng.gamma(2.0, 25.0, count), "clv_matched": rng.gamma(2.0, 200.0, count),
            "clv_lifetime": rng.gamma(2.0, 400.0, count), "clv_net": rng.gamma(2.0, 80.0, count),
            "clv_matched_net": rng.gamma(2.0, 150.0, count),
            "region": rng.choice(np.array(REGIONS, dtype=object), count),
        },
        index=pd.Index([f"c{i:04d}" for i in range(count)], name="customer_id"),
    )  # fmt: skip
    customers["segment"] = assign_tiers(customers["clv"], TIERS)
    return customers


def test_in_segment_order_gives_the_duckdb_segment_order_whatever_the_order_of_the_rows() -> None:
    customers = scored_customers()
    expected = segment_table(customers, ["segment", "region"], 3.0, 0.3)
    for name, column, tiers in (("value_tier", "segment", list(TIERS)), ("region", "region", None)):
        canonical = list(expected.loc[expected["segmentation"] == name, "segment"])
        rows = pd.DataFrame({"segment": canonical, "customers": range(len(canonical))})
        for seed in range(5):
            shuffled = rows.sample(frac=1.0, random_state=seed, ignore_index=True)
            ordered = in_segment_order(shuffled, tiers)
            assert list(ordered["segment"]) == canonical, (column, seed)
            assert list(ordered["customers"]) == list(range(len(canonical)))  # whole rows move together
    assert list(expected.loc[expected["segmentation"] == "value_tier", "segment"]) == ["top", "middle", "bottom"]
    with pytest.raises(ValueError, match="not among the configured ones"):
        in_segment_order(pd.DataFrame({"segment": ["top", "gold"]}), list(TIERS))


def test_spark_segment_sums_are_the_duckdb_ones_in_their_order_however_spark_partitions_them(spark: object) -> None:
    """The rows Spark collects come in an order that depends on the partitioning; the sums' never does: 'all'
    first, then each segmentation's segments in the DuckDB engine's order, with its totals and budget sums (the
    segment table is then built from them by the same code on both engines)."""
    customers = scored_customers()
    segmentations = ["segment", "region"]
    expected = segment_table(customers, segmentations, 3.0, 0.3)
    cells = SegmentCells.of(customers, [None, *segmentations])
    expected_totals, expected_budget = (
        customer_totals(customers, segmentations),
        segment_budget_sums(customers, cells, 0.5),
    )
    rows = customers.reset_index()
    rows["segment"] = rows["segment"].astype(object)
    for seed, partitions in enumerate([1, 3, 7]):
        shuffled = rows.sample(frac=1.0, random_state=seed, ignore_index=True)
        frame = spark.createDataFrame(shuffled).repartition(partitions)  # type: ignore[attr-defined]
        totals, budget, _ = segment_sums(frame, segmentations, list(TIERS), 0.5)
        assert_close(totals, expected_totals, atol=1e-9)
        assert_close(budget, expected_budget, atol=1e-9)
        assert_close(table_of_totals(totals, 3.0, 0.3), expected, atol=1e-9)
    assert list(expected["segmentation"].iloc[:4]) == ["all", "value_tier", "value_tier", "value_tier"]


def test_spark_run_gives_the_duckdb_run_predictions_parameters_and_segments(
    spark: object, simulated_log: Path, tmp_path: Path
) -> None:
    config = RunConfig.model_validate(
        {
            "data": {"path": str(simulated_log)},
            "as_of": END,
            "margin": 0.3,
            "heuristic": {"lifespan_years": "auto"},
            "models_dir": str(tmp_path / "models"),
            "spark": {"master": "local[2]"},
        }
    )
    duck = run_duckdb(config, output=tmp_path / "duckdb")
    result = run_spark(config, output=tmp_path / "spark", spark=spark)  # type: ignore[arg-type]

    # The Spark engine writes every per-customer column, each equal to DuckDB's, in its order; the intervals too.
    expected = pd.read_parquet(tmp_path / "duckdb" / "customers.parquet").set_index("customer_id")
    actual = pd.read_parquet(tmp_path / "spark" / "customers.parquet").set_index("customer_id")
    assert list(actual.columns) == list(expected.columns)
    assert expected["clv_lower"].notna().all()
    assert_close(actual, expected)
    for role in ("purchases", "spend"):
        ours, theirs = result.manifest["models"][role], duck.manifest["models"][role]
        for name, value in theirs["params"].items():
            assert ours["params"][name] == pytest.approx(value, rel=RELATIVE), (role, name)
        assert ours["log_likelihood"] == pytest.approx(theirs["log_likelihood"], rel=RELATIVE)
    assert result.manifest["heuristic"]["lifespan_years"] == pytest.approx(duck.forecast.lifespan_years, rel=1e-12)
    assert_same_totals(result.manifest["totals"], duck.manifest["totals"])
    assert_same_record(result.manifest["comparison"], duck.manifest["comparison"])
    assert set(result.segments["segmentation"]) == set(duck.forecast.segments["segmentation"])
    assert list(result.segments.columns) == list(duck.forecast.segments.columns)
    assert duck.forecast.segments["value_at_risk_upper"].notna().all()
    assert_close(result.segments, duck.forecast.segments)
    assert result.manifest["intervals"] == duck.manifest["intervals"] == {
        "level": 0.9, "totals": "predictive", "customers": "parameters",
    }  # fmt: skip
    for section in ("headline", "model-fit", "segments"):  # the report, written during the run on both engines
        assert report_text(tmp_path / "spark", section) == report_text(tmp_path / "duckdb", section), section
    for name in ("segments.csv", "customers.csv"):
        csv_expected = pd.read_csv(tmp_path / "duckdb" / name, dtype={"customer_id": str})
        csv_actual = pd.read_csv(tmp_path / "spark" / name, dtype={"customer_id": str})
        assert_close(csv_actual, csv_expected, rtol=CSV_RELATIVE, atol=CSV_ABSOLUTE)


def test_spark_drift_since_the_previous_run_is_the_duckdb_drift_whichever_engine_wrote_that_run(
    spark: object, simulated_log: Path, tmp_path: Path
) -> None:
    """May then June on each engine, and a DuckDB June after a Spark May: the same drift document in all three."""
    months = [dt.date(2021, 5, 31), END]

    def config(root: str) -> RunConfig:
        return RunConfig.model_validate(
            {
                "data": {"path": str(simulated_log)}, "margin": 0.3, "segments": {"tiers": {"top": 0.1, "rest": 0.9}},
                "output": str(tmp_path / root), "models_dir": str(tmp_path / f"{root}_models"),
                "spark": {"master": "local[2]"},
            }
        )  # fmt: skip

    duck = [run_duckdb(config("duckdb"), as_of=month) for month in months]
    ran = [run_spark(config("spark"), as_of=month, spark=spark) for month in months]  # type: ignore[arg-type]
    shutil.copytree(ran[0].output, tmp_path / "mixed" / months[0].isoformat())  # a Spark May beside a DuckDB June
    mixed = run_duckdb(config("mixed"), as_of=END)
    shutil.copytree(duck[0].output, tmp_path / "crossed" / months[0].isoformat())  # a DuckDB May beside a Spark June
    crossed = run_spark(config("crossed"), as_of=END, spark=spark)  # type: ignore[arg-type]

    expected = duck[1].manifest["drift"]
    assert expected["tiers"]["moved"] > 0 and expected["customers"]["continuing"] == 3_000
    assert [row["segment"] for row in expected["segments"]] == ["all customers", "top", "rest"]
    assert duck[0].manifest["drift"] is None and ran[0].manifest["drift"] is None
    for manifest in (ran[1].manifest, mixed.manifest, crossed.manifest):
        assert_same_value(manifest["drift"], expected, "drift")
        assert manifest["previous_run"]["as_of"] == "2021-05-31"


def test_spark_movements_count_new_missing_lapsed_and_tier_moves_as_in_memory(spark: object) -> None:
    before = pd.DataFrame(
        {"segment": ["top", "top", "rest", "rest", "top"], "p_alive": [0.9, 0.6, 0.2, 0.8, 0.7]},
        index=pd.Index(["a", "b", "c", "d", "g"], name="customer_id"),
    )
    after = pd.DataFrame(
        {"segment": ["top", "rest", "top", "rest", "top"], "p_alive": [0.9, 0.4, 0.7, 0.95, 0.8]},
        index=pd.Index(["a", "b", "c", "e", "g"], name="customer_id"),
    )
    frames = [spark.createDataFrame(frame.reset_index()) for frame in (before, after)]  # type: ignore[attr-defined]
    keys = [*MOVEMENT_KEYS, "customers"]
    on_spark = spark_movements(*frames, 0.5).sort_values(MOVEMENT_KEYS, ignore_index=True)[keys]
    in_memory = movements(before, after, 0.5).sort_values(MOVEMENT_KEYS, ignore_index=True)[keys]
    assert_close(on_spark, in_memory)
    assert customer_flows(on_spark) == {
        "previous": 5, "current": 5, "continuing": 4, "new": 1, "missing": 1, "lapsed": 1, "reactivated": 1,
    }  # fmt: skip


def test_a_spark_run_backtests_as_the_duckdb_run_does(spark: object, tmp_path: Path) -> None:
    """The config's backtest section on Spark: calibration summary, holdout counts, validation windows and the
    day-by-day repeat purchases come from Spark; backtest.json and backtest_customers.csv equal DuckDB's."""
    document = yaml.safe_load((CONFIGS / "cdnow_sample.yaml").read_text(encoding="utf-8"))
    document.update(output=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"), as_of="1998-06-30")
    config = RunConfig.model_validate(document)
    duck = run_duckdb(config, output=tmp_path / "duckdb")
    ran = run_spark(config, output=tmp_path / "spark", spark=spark)  # type: ignore[arg-type]
    assert ran.manifest["backtest"] == duck.manifest["backtest"]
    assert ran.manifest["backtest"]["calibration_end"] == "1997-09-30"
    assert_same_backtest(tmp_path / "spark", tmp_path / "duckdb")
    assert report_text(tmp_path / "spark", "backtest") == report_text(tmp_path / "duckdb", "backtest")
    # `forecast backtest --engine spark` writes the same backtest folder.
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    outcome = CliRunner().invoke(app, ["backtest", str(path), "--engine", "spark", "--output", str(tmp_path / "bt")])
    assert outcome.exit_code == 0, outcome.output
    assert_same_backtest(tmp_path / "bt", tmp_path / "duckdb")


def test_spark_samples_the_validation_customers_duckdb_samples(spark: object, simulated_log: Path) -> None:
    """Above model_selection.max_customers both engines score the same sample of a window's customers (by the MD5
    of the id), so purchase_model auto chooses alike on large logs."""
    data = DataConfig(path=str(simulated_log))
    window = Window(dt.date(2021, 3, 31), END)
    expected = DuckDBLog(read_transactions(data).connection).window_counts(window, 500)
    log, _ = typed_log(spark, data)  # type: ignore[arg-type]
    actual = SparkLog(log).window_counts(window, 500)
    assert expected.sampled and actual.customers_at_origin == expected.customers_at_origin
    assert 400 < expected.rows["customers"].sum() < 600
    assert_close(actual.rows, expected.rows)


def test_the_driver_time_zone_does_not_move_the_spark_cut_off(spark: object, write_log) -> None:
    """A purchase at midnight after as_of is outside the summary, one at 23:30 on as_of inside, with the driver in
    New York as in UTC (pyspark reads a naive datetime literal in the Python process's time zone)."""
    rows = [("a", "2024-01-02 10:00:00", 10.0), ("a", "2024-03-31 23:30:00", 20.0), ("a", "2024-04-01 00:00:00", 5.0),
            ("b", "2024-01-05 12:00:00", 8.0), ("b", "2024-04-01 03:00:00", 7.0)]  # fmt: skip
    data = DataConfig(path=str(write_log(rows)))
    as_of = dt.date(2024, 3, 31)
    expected = summarize_duckdb(read_transactions(data).connection, as_of, 7.0, "day")
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        actual = spark_summary(spark, data, as_of, "day")
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()
    assert_close(actual[expected.columns], expected)
    assert expected.loc["a", "revenue"] == 30.0 and expected.loc["b", "frequency"] == 0


def test_cli_run_with_engine_spark_writes_the_outputs(spark: object, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "data:\n  path: lifetimes:CDNOW_sample.txt\n  format: whitespace\n  header: false\n"
        "  columns: [master_id, customer_id, date, number_of_cds, dollar_value]\n  customer_id: customer_id\n"
        "  timestamp: date\n  timestamp_format: '%Y%m%d'\n  amount: dollar_value\n"
        f"as_of: 1997-09-30\nmargin: 0.3\npurchase_model: bgnbd\noutput: {tmp_path / 'out'}\n"
        f"models_dir: {tmp_path / 'models'}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["run", str(config), "--engine", "spark"])
    assert result.exit_code == 0, result.output
    assert "2,357 customers (Spark)" in result.output
    for name in ("customers.parquet", "customers.csv", "segments.csv", "manifest.json"):
        assert (tmp_path / "out" / "1997-09-30" / name).exists(), name  # <output>/<as_of>/, as the DuckDB engine
    assert (tmp_path / "models" / "1997-09-30" / "purchases.json").exists()
    # forecast report reads a Spark run (its customers.parquet is a folder of part files: it could not before).
    report = CliRunner().invoke(app, ["report", str(tmp_path / "out" / "1997-09-30")])
    assert report.exit_code == 0, report.output
    assert "2,357" in (tmp_path / "out" / "1997-09-30" / "report.html").read_text(encoding="utf-8")
    # The month's run is replaced only with --force; a folder that is not a run never is.
    again = CliRunner().invoke(app, ["run", str(config), "--engine", "spark"])
    assert again.exit_code == 2 and "already holds a run. Pass --force" in again.output, again.output
    assert CliRunner().invoke(app, ["run", str(config), "--engine", "spark", "--force"]).exit_code == 0
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "notes.txt").write_text("keep me", encoding="utf-8")
    refused = CliRunner().invoke(app, ["run", str(config), "--engine", "spark", "--output", str(documents), "--force"])
    assert refused.exit_code == 2 and "not a forecast run" in refused.output, refused.output
    assert (documents / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert not list((tmp_path / "out").glob(".*")) and not list((tmp_path / "models").glob(".*"))
    # Fader, Hardie & Lee (2005), CDNOW sample, weeks: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426.
    params = pd.read_json(tmp_path / "models" / "1997-09-30" / "purchases.json", typ="series")["params"]
    assert params["r"] == pytest.approx(0.243, abs=1e-3)
    assert params["alpha"] == pytest.approx(4.414, abs=1e-3)
    assert params["a"] == pytest.approx(0.793, abs=1e-3)
    assert params["b"] == pytest.approx(2.426, abs=1e-3)


def test_cli_backfills_months_on_spark_each_compared_with_the_one_before(spark: object, tmp_path: Path) -> None:
    """`forecast run --engine spark --as-of 1997-04 --through 1997-05`: two runs, the second with drift."""
    config = tmp_path / "run.yaml"
    document = yaml.safe_load((CONFIGS / "cdnow_sample.yaml").read_text(encoding="utf-8"))
    document.update(as_of=None, output=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"), backtest=None)
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    outcome = CliRunner().invoke(
        app, ["run", str(config), "--engine", "spark", "--as-of", "1997-04", "--through", "1997-05"]
    )
    assert outcome.exit_code == 0, outcome.output
    months = ["1997-04-30", "1997-05-31"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == months
    for index, month in enumerate(months):
        manifest = yaml.safe_load((tmp_path / "runs" / month / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["engine"] == "spark" and f"as_of {month}: 2,357 customers (Spark)" in outcome.stdout
        assert (manifest["drift"] is None) == (index == 0)
    assert "(+" in outcome.stdout or "(-" in outcome.stdout  # the change since April, in the May line


def test_cli_budget_on_spark_writes_the_duckdb_budget_file(spark: object, tmp_path: Path) -> None:
    """`forecast budget --engine spark` forecasts on Spark (it read the whole log locally before) and writes the
    budget.csv DuckDB writes."""
    config = tmp_path / "run.yaml"
    document = yaml.safe_load((CONFIGS / "cdnow_sample.yaml").read_text(encoding="utf-8"))
    document.update(output=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"))
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    files = {engine: tmp_path / f"budget_{engine}.csv" for engine in ("duckdb", "spark")}
    for engine, path in files.items():
        outcome = CliRunner().invoke(
            app, ["budget", str(config), "--cac", "10", "--output", str(path), "--engine", engine]
        )
        assert outcome.exit_code == 0, outcome.output
    expected, actual = (pd.read_csv(files[engine], keep_default_na=False) for engine in ("duckdb", "spark"))
    assert len(expected) > 5 and (expected["cac"] == 10).all()
    assert_close(actual, expected, rtol=CSV_RELATIVE, atol=CSV_ABSOLUTE)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()  # nothing but budget.csv


def test_cli_rejects_an_unknown_engine(sample_config_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(sample_config_path), "--engine", "polars"])
    assert result.exit_code == 2
    assert "--engine must be duckdb or spark" in result.output


def test_console_script_runs_spark_workers_with_its_own_interpreter(simulated_log: Path, tmp_path: Path) -> None:
    """Without PYSPARK_PYTHON, local Spark workers start the console script's interpreter, not the `python3` on
    PATH (which lacks pandas: the run used to exit 1 with "No module named 'pandas'" and a traceback)."""
    config = {
        "data": {"path": str(simulated_log)}, "as_of": END.isoformat(), "models_dir": str(tmp_path / "models"),
        "spark": {"master": "local[1]", "conf": {"spark.ui.enabled": "false"}},
    }  # fmt: skip
    done = run_console_script(tmp_path, config, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3,000 customers (Spark)" in done.stdout
    assert len(pd.read_parquet(tmp_path / "out" / "customers.parquet")) == 3_000


def test_a_spark_failure_exits_2_with_a_paragraph_and_writes_nothing(simulated_log: Path, tmp_path: Path) -> None:
    """A query that Spark itself rejects (an unparseable setting of the session) is a user error: exit 2, one
    paragraph naming the step and spark.master, no traceback, no outputs or models."""
    config = {
        "data": {"path": str(simulated_log)}, "as_of": END.isoformat(), "models_dir": str(tmp_path / "models"),
        "spark": {"master": "local[1]", "conf": {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "-5"}},
    }  # fmt: skip
    done = run_console_script(tmp_path, config, tmp_path / "out")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Spark failed while" in done.stderr
    assert "spark.master local[1]" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"data": {"exclude": [{"column": "customer_id", "equals": "00001"}]}}, "data.exclude"),
        ({"data": {"duplicates": "drop"}}, "data.duplicates is applied by the DuckDB engine only"),
        ({"data": {"invalid_rows": "drop", "timezone": "Europe/Paris"}}, "data.invalid_rows: drop and data.timezone"),
        (
            {"spark": {"conf": {"spark.submit.deployMode": "cluster"}}},
            "spark.submit.deployMode: cluster cannot be used",
        ),
    ],
)
def test_spark_refuses_the_settings_only_duckdb_applies_before_starting(
    sample_config_path: Path, tmp_path: Path, setting: dict[str, object], named: str
) -> None:
    """Row filters would be silently ignored by the Spark engine, and cluster deploy mode crashed (this
    process is the driver): exit 2 naming them before Spark starts, nothing written."""

    document = yaml.safe_load(sample_config_path.read_text())
    document["data"]["path"] = str((sample_config_path.parent / document["data"]["path"]).resolve())
    for key, value in setting.items():
        document[key] = {**document.get(key, {}), **value} if key in ("data", "spark") else value
    document.update(output=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["run", str(config), "--engine", "spark"])
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()


def test_the_master_comes_from_the_config_then_master_then_spark_defaults_then_local(tmp_path: Path) -> None:
    """The config's local[*] default used to win over MASTER and spark-defaults.conf silently."""
    conf_dir, home = tmp_path / "conf", tmp_path / "spark"
    conf_dir.mkdir()
    (home / "conf").mkdir(parents=True)
    (conf_dir / "spark-defaults.conf").write_text("# site settings\nspark.master   spark://site:7077\n")
    (home / "conf" / "spark-defaults.conf").write_text("spark.master\tyarn\n")
    unset = SparkConfig()
    assert spark_master(SparkConfig(master="local[2]"), {"MASTER": "yarn"}) == "local[2]"
    assert spark_master(unset, {"MASTER": "spark://env:7077", "SPARK_CONF_DIR": str(conf_dir)}) == "spark://env:7077"
    assert spark_master(unset, {"SPARK_CONF_DIR": str(conf_dir), "SPARK_HOME": str(home)}) == "spark://site:7077"
    assert spark_master(unset, {"SPARK_HOME": str(home)}) == "yarn"
    assert spark_master(unset, {"SPARK_CONF_DIR": str(tmp_path / "none")}) == "local[*]"
    assert spark_master(unset, {}) == "local[*]"
    # Spark Connect: spark.remote, else SPARK_REMOTE (as pyspark reads it), unless the config names a master.
    assert spark_remote(SparkConfig(remote="sc://connect:15002"), {}) == "sc://connect:15002"
    assert spark_remote(unset, {"SPARK_REMOTE": "sc://env:15002"}) == "sc://env:15002"
    assert spark_remote(SparkConfig(master="local[2]"), {"SPARK_REMOTE": "sc://env:15002"}) is None
    assert spark_remote(unset, {"MASTER": "yarn"}) is None
    with pytest.raises(ValidationError, match=r"spark\.master or spark\.remote"):
        SparkConfig(master="yarn", remote="sc://connect:15002")


def test_a_cluster_run_needs_an_output_every_node_shares(sample_config_path: Path, tmp_path: Path) -> None:
    """With a non-local master the executors write customers.parquet: to the driver's staging folder (or any path
    without a scheme) they wrote on their own disks, and the run published an empty customers.parquet with exit 0.
    Refused before Spark starts; a URI of shared storage (or file:// for a mount on every node) passes."""

    document = yaml.safe_load(sample_config_path.read_text())
    document["data"]["path"] = str((sample_config_path.parent / document["data"]["path"]).resolve())
    document.update(
        output=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"), spark={"master": "spark://127.0.0.1:7077"}
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["run", str(config), "--engine", "spark"])
    assert result.exit_code == 2, result.output
    assert "spark.output is not set, a path only this machine sees" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()
    cluster = RunConfig.model_validate({**document, "engine": "spark"})
    with pytest.raises(ConfigError, match=r"spark\.output is '/mnt/out'"):
        check_output_shared(cluster.model_copy(update={"spark": SparkConfig(master="yarn", output="/mnt/out")}))
    for shared in ("hdfs:///clv/out", "s3a://bucket/clv", "file:///mnt/shared/clv"):
        check_output_shared(cluster.model_copy(update={"spark": SparkConfig(master="yarn", output=shared)}))
    check_output_shared(cluster.model_copy(update={"spark": SparkConfig(master="local[2]")}))


def test_boundary_keys_are_the_customers_at_those_ranks_over_any_partitioning(spark: object) -> None:
    """The value tiers' boundary customers, found with DataFrame operations only (the RDD zipWithIndex it replaced
    pickled every row through Python workers and fails on Spark Connect): the same as sorting everybody here, with
    many ties broken by customer id, whatever the partitioning."""
    rng = np.random.default_rng(11)
    count = 2_000
    frame = pd.DataFrame({"customer_id": [f"{i:05d}" for i in rng.permutation(count)],
                          "clv": rng.integers(0, 40, count).astype(float)})  # fmt: skip
    ordered = frame.sort_values(["clv", "customer_id"], ascending=[False, True], ignore_index=True)
    positions = [0, 19, 20, 399, 1_000, 1_999]
    expected = {p: (ordered.loc[p, "clv"], ordered.loc[p, "customer_id"]) for p in positions}
    conf = spark.conf  # type: ignore[attr-defined]
    settings = ("spark.sql.shuffle.partitions", "spark.sql.adaptive.coalescePartitions.enabled")
    saved = [conf.get(name) for name in settings]
    try:
        conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
        for partitions in (1, 3, 7):  # the sort's partitions, and as many input partitions
            conf.set("spark.sql.shuffle.partitions", str(partitions))
            scored = spark.createDataFrame(frame).repartition(partitions)  # type: ignore[attr-defined]
            assert boundary_keys(scored, positions) == expected, partitions
    finally:
        for name, value in zip(settings, saved, strict=True):
            conf.set(name, value)
    assert boundary_keys(spark.createDataFrame(frame), []) == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize("resolution", ["day", "exact"])
def test_spark_nets_returns_into_earlier_purchase_days_as_duckdb_does(
    spark: object, write_log, resolution: str
) -> None:
    """A return on a day without a purchase nets into the latest purchase day within data.return_window_days (it
    never becomes a purchase); one without such a day is dropped; a day is never netted below zero."""
    rows = [
        ("a", "2024-01-01 09:00:00", 100.0), ("a", "2024-01-05", -30.0), ("a", "2024-01-10", 50.0),  # later day
        ("b", "2024-01-03", 80.0), ("b", "2024-01-03", -20.0), ("b", "2024-01-20", 40.0),  # same day
        ("c", "2024-01-02", -15.0), ("c", "2024-01-09", 25.0),  # before any purchase: dropped
        ("d", "2024-01-04", 10.0), ("d", "2024-01-04", -50.0), ("d", "2024-02-01", 5.0),  # over its day: 0
        ("e", "2023-09-01", 60.0), ("e", "2024-01-06", -60.0), ("e", "2024-01-07", 20.0),  # beyond 90 days
    ]  # fmt: skip
    data = DataConfig(path=str(write_log(rows)))
    as_of = dt.date(2024, 3, 31)
    expected = summarize_duckdb(read_transactions(data).connection, as_of, 7.0, resolution)
    actual = spark_summary(spark, data, as_of, resolution)
    assert_close(actual[expected.columns], expected)
    assert (expected.loc["a", "frequency"], expected.loc["a", "revenue"]) == (1, 120.0)
    assert expected.loc["d", "revenue"] == 5.0 and expected.loc["e", "frequency"] == 1
    _, quality = typed_log(spark, data)  # type: ignore[arg-type]
    assert any(m.startswith("2 returns had no purchase") for m in quality.warnings), quality.warnings
    assert any(m.startswith("1 purchase days received returns larger") for m in quality.warnings), quality.warnings


def test_spark_reads_doubled_quotes_in_csv_fields_as_duckdb_does(spark: object, tmp_path: Path) -> None:
    """RFC 4180: inside a quoted field "" is one quote (Spark's default escape is a backslash)."""
    path = tmp_path / "quoted.csv"
    path.write_text(
        "customer_id,timestamp,amount,region\n"
        '"A ""B"" C",2024-01-01,10,"North, ""East"""\n"A ""B"" C",2024-02-01,5,"North, ""East"""\n'
        'q,2024-01-03,8,"say ""hi"""\nr,2024-01-04,6,"plain, comma"\n'
    )
    data = DataConfig(path=str(path), segment_columns=["region"])
    as_of = dt.date(2024, 3, 31)
    expected = summarize_duckdb(read_transactions(data).connection, as_of, 7.0, "day", ["region"])
    actual = spark_summary(spark, data, as_of, "day")
    assert sorted(actual.index) == sorted(expected.index) == ['A "B" C', "q", "r"]
    assert actual.loc['A "B" C', "region"] == 'North, "East"' and actual.loc["q", "region"] == 'say "hi"'
    assert_close(actual[expected.columns], expected)


def test_spark_refuses_dates_before_1900_or_after_tomorrow_as_duckdb_does(spark: object, tmp_path: Path) -> None:
    path = tmp_path / "far.csv"
    path.write_text("customer_id,order_date,amount\n1,2020-01-01,5\n2,1800-01-01,3\n3,2999-01-01,4\n")
    data = DataConfig(path=str(path), timestamp="order_date")
    with pytest.raises(DataError, match=r"2 of 3 rows .* falls outside 1900-01-01 to .*'1800-01-01', line 4 '2999"):
        read_transactions(data)
    with pytest.raises(DataError, match=r"2 of 3 rows .* falls outside 1900-01-01 to .*\['1800-01-01', '2999-01-01'\]"):
        typed_log(spark, data)  # type: ignore[arg-type]


def test_spark_reads_whole_float_ids_as_duckdb_does(spark: object, tmp_path: Path) -> None:
    """'13085.0' beside '13085' in a text log, and a Parquet id column of doubles (pandas makes ids with blanks
    float), are the integer ids on both engines; Spark kept '13085.0' as another customer and wrote 42.0 as '42.0'.
    Floating-point ids that are not whole numbers are refused by both."""
    text = tmp_path / "float_text.csv"
    text.write_text("customer_id,timestamp,amount\n13085.0,2024-01-01,10\n13085,2024-02-01,5\n42.0,2024-01-10,3\n")
    doubles = tmp_path / "doubles.parquet"
    days = pd.to_datetime(["2024-01-01", "2024-02-01", "2024-01-10", "2024-01-11"])
    frame = pd.DataFrame({"customer_id": [13085.0, 13085.0, 42.0, np.nan], "timestamp": days, "amount": [10, 5, 3, 1]})
    frame.to_parquet(doubles)
    as_of = dt.date(2024, 3, 31)
    for path in (text, doubles):
        data = DataConfig(path=str(path))
        expected = summarize_duckdb(read_transactions(data).connection, as_of, 7.0, "day")
        actual = spark_summary(spark, data, as_of, "day")
        assert sorted(actual.index) == sorted(expected.index) == ["13085", "42"], path.name
        assert_close(actual[expected.columns], expected)
    frame.assign(customer_id=[1.5, 1.5, 42.0, np.nan]).to_parquet(doubles)
    data = DataConfig(path=str(doubles))
    with pytest.raises(DataError, match=r"not whole numbers below 2\^53"):
        read_transactions(data)
    with pytest.raises(DataError, match=r"not whole numbers below 2\^53 .* \[1\.5, 1\.5\]"):
        typed_log(spark, data)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", ["1e29", "-1e30"])
def test_spark_refuses_amounts_of_1e29_or_more_as_duckdb_does(spark: object, tmp_path: Path, amount: str) -> None:
    """DuckDB sums amounts exactly with 29 digits before the point and refuses larger ones; Spark summed 1e29 and
    netted -1e30 away as a return without a purchase."""
    path = tmp_path / "huge.csv"
    path.write_text(f"customer_id,timestamp,amount\na,2024-01-01,{amount}\na,2024-02-01,5\n")
    data = DataConfig(path=str(path))
    with pytest.raises(DataError, match=r"1 of 2 rows .* 1e29 or more in size"):
        read_transactions(data)
    with pytest.raises(DataError, match=r"1 of 2 rows .* 1e29 or more in size"):
        typed_log(spark, data)  # type: ignore[arg-type]


def test_spark_reads_the_text_timestamps_duckdb_reads_and_refuses_the_others(spark: object, tmp_path: Path) -> None:
    """Without data.timestamp_format DuckDB reads dates separated by '/' or ' ' and a time after two spaces, which
    Spark's cast refused; it refuses a year or a month alone, an hour without minutes and an offset after a space,
    which Spark's cast read; and a Parquet column of numbers is no timestamp (Spark read 20240101 as seconds)."""
    path = tmp_path / "shapes.csv"
    path.write_text(
        "customer_id,timestamp,amount\na,2024/01/02,10\na,2024 02 03 10:00:00,5\nb, 2024/01/05 ,3\n"
        "b,2024-01-06  23:30:00+02:00,4\nb,2024-01-06T23:30:00+00:00,2\n"
    )
    data = DataConfig(path=str(path))
    as_of = dt.date(2024, 3, 31)
    expected = summarize_duckdb(read_transactions(data).connection, as_of, 7.0, "exact")
    actual = spark_summary(spark, data, as_of, "exact")
    assert_close(actual[expected.columns], expected)
    assert list(expected["frequency"]) == [1, 2]
    for value in ("2024-01", "2024", "2024-01-02 10", "2024-01-02 10:00:00 +02:00"):
        path.write_text(f"customer_id,timestamp,amount\na,2024-01-01,10\na,{value},5\n")
        with pytest.raises(DataError, match="1 of 2 rows"):
            read_transactions(data)
        with pytest.raises(DataError, match="1 of 2 rows"):
            typed_log(spark, data)  # type: ignore[arg-type]
    numbers = tmp_path / "numbers.parquet"
    pd.DataFrame({"customer_id": ["a", "a"], "timestamp": [20240101, 20240201], "amount": [10, 5]}).to_parquet(numbers)
    with pytest.raises(DataError, match="2 of 2 rows"):
        read_transactions(DataConfig(path=str(numbers)))
    with pytest.raises(DataError, match="2 of 2 rows"):
        typed_log(spark, DataConfig(path=str(numbers)))  # type: ignore[arg-type]


def test_spark_reads_timestamp_format_as_duckdb_strptime_does(spark: object, tmp_path: Path) -> None:
    """strptime reads fields without leading zeros, ignores surrounding spaces and reads '%y' as 1969 to 2068:
    Spark's patterns refused '1/2/97 9:05' and ' 12/31/97 23:59 ', and read '97' as 2097 (an invalid date)."""
    path = tmp_path / "us.csv"
    path.write_text("customer_id,timestamp,amount\na,1/2/97 9:05,10\na, 12/31/97 23:59 ,5\nb,03/04/20 10:00,3\n")
    data = DataConfig(path=str(path), timestamp_format="%m/%d/%y %H:%M")
    as_of = dt.date(2020, 6, 30)
    expected = summarize_duckdb(read_transactions(data).connection, as_of, 7.0, "day")
    actual = spark_summary(spark, data, as_of, "day")
    assert_close(actual[expected.columns], expected)
    assert str(expected.loc["a", "first_purchase"])[:10] == "1997-01-02"


def test_spark_maps_the_columns_of_csv_files_by_name_as_duckdb_does(spark: object, tmp_path: Path) -> None:
    """Files of one log with their columns in another order, or one column fewer: DuckDB reads them by name
    (union_by_name); Spark mapped every file by position to one file's header, so the store became the customer."""
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "a.csv").write_text("customer_id,store,timestamp,amount\nc1,s1,2024-01-01,10\nc2,s1,2024-01-02,4\n")
    (folder / "b.csv").write_text("store,customer_id,timestamp,amount\ns2,c1,2024-02-01,5\n")
    (folder / "c.csv").write_text("customer_id,timestamp,amount\nc2,2024-03-01,7\n")
    data = DataConfig(path=str(folder), segment_columns=["store"])
    as_of = dt.date(2024, 3, 31)
    expected = summarize_duckdb(read_transactions(data).connection, as_of, 7.0, "day", ["store"])
    actual = spark_summary(spark, data, as_of, "day")
    assert sorted(actual.index) == sorted(expected.index) == ["c1", "c2"]
    assert_close(actual[expected.columns], expected)
