"""Bulk outputs: the DuckDB-written CSV holds what pandas wrote before, formula-like text escaped;
the CSV policy; DuckDB resources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from forecast.batch.outputs import SPREADSHEET_ROWS, csv_wanted, write_customer_tables
from forecast.batch.pipeline import escape_for_spreadsheet
from forecast.config import DuckDBConfig
from forecast.data.ingest import connect_duckdb


def test_customer_tables_match_the_pandas_writers(tmp_path: Path) -> None:
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
    escape_for_spreadsheet(expected).to_csv(tmp_path / "pandas.csv", index=False)
    ours = pd.read_csv(tmp_path / "customers.csv", dtype=str, keep_default_na=False)
    theirs = pd.read_csv(tmp_path / "pandas.csv", dtype=str, keep_default_na=False)
    assert ours["customer_id"].tolist() == ["'=SUM(A1)", "'+1", "'-2", "'@x", "plain", "007"]
    assert ours["segment"].tolist() == theirs["segment"].tolist()
    np.testing.assert_array_equal(ours["clv"].astype(float), theirs["clv"].astype(float))  # exact round trip
    assert ours.drop(columns="clv").equals(theirs.drop(columns="clv"))


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
