"""Bulk outputs: the Parquet and CSV writers, formula-like text escaped in every CSV; the CSV policy; DuckDB
resources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.batch.outputs import SPREADSHEET_ROWS, csv_wanted, frame_to_csv, is_money, write_customer_tables
from forecast.cli import app
from forecast.config import DuckDBConfig
from forecast.data.ingest import connect_duckdb


def test_customer_tables_hold_the_frame_and_the_csv_escapes_formula_text(tmp_path: Path) -> None:
    """customers.parquet round-trips the frame; customers.csv holds the same rows, formula-like ids and segments
    with a leading apostrophe, money in cents, and the same bytes as ``frame_to_csv`` of the frame."""
    ids = ["=SUM(A1)", "+1", "-2", "@x", "plain", "007"]
    customers = pd.DataFrame(
        {
            "frequency": np.arange(6, dtype="int64"),
            "clv": [0.1, 1 / 3, 1e-20, 12345.678, 0.0, 2.5],
            "segment": pd.Categorical(["rest", "top", "rest", "=evil", "rest", "top"]),
        },
        index=pd.Index(pd.array(ids, dtype="string"), name="customer_id"),
    )
    columns = ["customer_id", "segment", "frequency", "clv"]
    write_customer_tables(customers, columns, tmp_path, csv=True)
    expected = customers.reset_index()[columns]
    parquet = pd.read_parquet(tmp_path / "customers.parquet")
    assert list(parquet.columns) == columns
    pd.testing.assert_frame_equal(parquet, expected, check_dtype=False, check_categorical=False)
    written = pd.read_csv(tmp_path / "customers.csv", dtype=str, keep_default_na=False)
    assert written["customer_id"].tolist() == ["'=SUM(A1)", "'+1", "'-2", "'@x", "plain", "007"]
    assert written["segment"].tolist() == ["rest", "top", "rest", "'=evil", "rest", "top"]
    assert written["clv"].tolist() == ["0.1", "0.33", "0.0", "12345.68", "0.0", "2.5"]
    frame_to_csv(expected, tmp_path / "frame.csv")
    assert (tmp_path / "frame.csv").read_bytes() == (tmp_path / "customers.csv").read_bytes()


def test_frame_to_csv_escapes_formulas_only_in_text(tmp_path: Path) -> None:
    """Text starting with = + - @ (or tab, CR) gets a leading apostrophe; numbers, other text and missing values
    do not, and the frame is left alone."""
    frame = pd.DataFrame(
        {
            "segment": ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "plain", "a=b", None],
            "value": [-1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan],
        }
    )
    frame_to_csv(frame, tmp_path / "t.csv")
    written = pd.read_csv(tmp_path / "t.csv", dtype={"segment": str}, keep_default_na=False, na_values=[""])
    assert written["segment"].tolist()[:6] == ['\'=HYPERLINK("http://x")', "'+1", "'-2", "'@SUM(A1)", "plain", "a=b"]
    assert pd.isna(written["segment"].iloc[6])
    np.testing.assert_array_equal(written["value"], frame["value"])
    assert frame["segment"].iloc[0].startswith("=")


def test_parquet_is_written_in_slices_without_losing_rows(tmp_path: Path) -> None:
    from forecast.batch.outputs import write_parquet

    frame = pd.DataFrame({"x": np.arange(10.0)}, index=pd.Index([f"c{i}" for i in range(10)], name="customer_id"))
    write_parquet(frame, ["customer_id", "x"], tmp_path / "t.parquet", slice_rows=3)
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back["x"].tolist() == list(np.arange(10.0))
    assert back["customer_id"].tolist() == [f"c{i}" for i in range(10)]


def test_csv_policy_skips_tables_a_spreadsheet_cannot_open() -> None:
    assert csv_wanted("auto", SPREADSHEET_ROWS) == (True, None)
    wanted, message = csv_wanted("auto", SPREADSHEET_ROWS + 1)
    assert not wanted and message is not None and "customers.parquet" in message
    assert csv_wanted("always", 10**8) == (True, None)
    assert csv_wanted("never", 5) == (False, None)


def test_duckdb_connection_applies_the_configured_resources(tmp_path: Path) -> None:
    con = connect_duckdb(DuckDBConfig(threads=1, memory_limit="512MB", temp_directory=str(tmp_path)))
    threads, limit, temp = con.execute(
        "SELECT current_setting('threads'), current_setting('memory_limit'), current_setting('temp_directory')"
    ).fetchone()  # type: ignore[misc]
    assert threads == 1
    assert limit.replace(" ", "") in ("512.0MiB", "488.2MiB", "512MB", "488.2MB")
    assert temp == str(tmp_path)


def test_parquet_keeps_dtypes_and_dictionary_encodes_only_few_valued_columns(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from forecast.batch.outputs import write_parquet

    frame = pd.DataFrame(
        {
            "frequency": np.array([0, 1, 2, 1], dtype="int64"),
            "T": [10.0, 10.0, 11.0, 12.0],
            "clv": [0.5, np.nan, 2.0, 3.0],
            "segment": pd.Categorical(["rest", "top", "rest", "top"], categories=["top", "rest"], ordered=True),
        },
        index=pd.Index(pd.array(["a", "b", "c", "d"], dtype="string"), name="customer_id"),
    )
    columns = ["customer_id", "segment", "frequency", "T", "clv"]
    write_parquet(frame, columns, tmp_path / "t.parquet", slice_rows=3)
    back = pd.read_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(back, frame.reset_index()[columns], check_index_type=False)
    metadata = pq.ParquetFile(tmp_path / "t.parquet").metadata
    assert metadata.num_row_groups == 2
    encodings = {metadata.schema.column(i).name: metadata.row_group(0).column(i).encodings for i in range(5)}
    dictionary = {name for name, used in encodings.items() if "RLE_DICTIONARY" in used}
    assert dictionary == {"segment", "frequency", "T"}
    assert pq.ParquetFile(tmp_path / "t.parquet").read().column("clv").null_count == 1  # NaN is written as null


def test_csv_rounds_money_to_cents_and_other_floats_to_4_significant_figures(tmp_path: Path) -> None:
    """customers.csv (from the Parquet file) and ``frame_to_csv`` write 2500315.6299999994 of money as 2500315.63
    and rates 0.123456789 and 12345.6789 as 0.1235 and 12350, without float noise; integers, text and missing
    values as they are; customers.parquet keeps every value at full precision."""
    customers = pd.DataFrame(
        {
            "frequency": np.array([123456789, 2, 0], dtype="int64"),
            "clv": [2500315.6299999994, 1 / 3, -1.005],
            "revenue_to_date": [0.125, 12345.678, np.nan],
            "p_alive": [0.123456789, 3.21234e-30, 0.0],
            "purchases_per_year": [12345.6789, 1.0, 2.0 / 3],
            "ltv_to_cac": [1.23456, 30.0, np.inf],
            "segment": ["=top", "rest", "rest"],
        },
        index=pd.Index(pd.array(["a", "b", "c"], dtype="string"), name="customer_id"),
    )
    columns = ["customer_id", *customers.columns]
    write_customer_tables(customers, columns, tmp_path, csv=True)
    frame_to_csv(customers.reset_index(), tmp_path / "frame.csv")
    assert (tmp_path / "frame.csv").read_bytes() == (tmp_path / "customers.csv").read_bytes()
    lines = (tmp_path / "customers.csv").read_text().splitlines()
    assert lines == [
        "customer_id,frequency,clv,revenue_to_date,p_alive,purchases_per_year,ltv_to_cac,segment",
        "a,123456789,2500315.63,0.13,0.1235,12350.0,1.235,'=top",
        "b,2,0.33,12345.68,3.212e-30,1.0,30.0,rest",
        "c,0,-1.0,,0.0,0.6667,inf,rest",
    ]
    parquet = pd.read_parquet(tmp_path / "customers.parquet").set_index("customer_id")
    pd.testing.assert_frame_equal(parquet, customers, check_index_type=False, check_exact=True)


def test_money_columns_are_told_apart_by_one_rule() -> None:
    """Currency amounts of the customer, segment, budget and backtest tables are money; rates, probabilities,
    counts per time, times and the LTV:CAC ratio are not."""
    money = [
        "clv", "clv_lower", "clv_upper", "clv_heuristic", "revenue", "monetary_value", "expected_spend",
        "avg_purchase_value", "revenue_to_date", "clv_total", "clv_heuristic_total", "heuristic_gap_lower",
        "clv_lower_total", "first_purchase_value", "new_customer_spend", "new_customer_clv_upper",
        "max_acquisition_cost", "value_at_risk", "cac", "actual_revenue", "predictive_revenue",
    ]  # fmt: skip
    other = [
        "p_alive", "mean_p_alive", "expected_purchases", "purchases_per_year", "recency", "T", "ltv_to_cac",
        "actual_purchases", "heuristic_purchases",
    ]  # fmt: skip
    assert [column for column in money if not is_money(column)] == []
    assert [column for column in other if is_money(column)] == []


def test_segments_csv_of_a_cdnow_sample_run_names_segmentations_and_rounds_money(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_config_path: Path
) -> None:
    """segments.csv names the value tiers value_tier and the RFM groups rfm (never the per-customer columns segment
    and rfm_group, which customers.parquet keeps), with no more than 2 decimals in any money cell; customers.csv
    holds customers.parquet's money rounded to cents."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(sample_config_path), "--output", "out"])
    assert result.exit_code == 0, result.output
    segments = pd.read_csv(tmp_path / "out" / "segments.csv", dtype=str, keep_default_na=False)
    assert set(segments["segmentation"]) == {"all", "value_tier", "rfm", "cohort"}
    money = [column for column in segments.columns if is_money(column) and column != "segment"]
    assert {"clv_total", "revenue_to_date", "max_acquisition_cost", "value_at_risk"} <= set(money)
    for column in money:
        wrong = segments.loc[~segments[column].str.fullmatch(r"-?\d+(\.\d{1,2})?|-?inf|"), column]
        assert wrong.empty, (column, wrong.head().tolist())
    assert segments.loc[segments["segmentation"] == "all", "customers"].tolist() == ["2357"]

    parquet = pd.read_parquet(tmp_path / "out" / "customers.parquet")
    assert {"segment", "rfm_group"} <= set(parquet.columns)
    csv = pd.read_csv(tmp_path / "out" / "customers.csv", dtype={"customer_id": str})
    for column in ("clv", "revenue", "monetary_value", "expected_spend"):
        np.testing.assert_allclose(csv[column], parquet[column], rtol=0, atol=0.005 + 1e-9, err_msg=column)
        np.testing.assert_array_equal(csv[column], csv[column].round(2), err_msg=column)
    np.testing.assert_allclose(csv["p_alive"], parquet["p_alive"], rtol=5e-4)


def test_frame_to_csv_keeps_the_rows_in_order(tmp_path: Path) -> None:
    """DuckDB scans an Arrow table in parallel: a segment table concatenated from others (its text columns in
    several chunks) and a large frame came out of order (29 of 30 and 10 of 10 writes before)."""
    pieces = [pd.DataFrame({"segment": pd.array([f"s{i}-{j}" for j in range(3)], dtype="str"), "n": range(3)})
              for i in range(6)]  # fmt: skip
    small = pd.concat(pieces, ignore_index=True)
    large = pd.DataFrame({"segment": pd.array([f"c{i}" for i in range(300_000)], dtype="str"),
                          "n": np.arange(300_000)})  # fmt: skip
    for name, frame in (("small", small), ("large", large)):
        for attempt in range(5):
            path = tmp_path / f"{name}{attempt}.csv"
            frame_to_csv(frame, path)
            written = pd.read_csv(path, keep_default_na=False)
            assert list(written.columns) == ["segment", "n"]
            assert written["segment"].tolist() == frame["segment"].tolist(), (name, attempt)
