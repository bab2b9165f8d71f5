"""The run's tables on disk: the per-customer table as Parquet in bounded memory, and every CSV through one writer.

Parquet is written in slices: the frame is converted to Arrow one slice of rows at a time, column by column
(no ``reset_index`` copy of the frame), so no second full copy of the table is held in memory.

Every CSV (customers.csv, segments.csv, backtest_customers.csv) is written by DuckDB's ``COPY ... TO`` through
``copy_to_csv``, so they share one format, one rounding of numbers (``csv_number``: money to cents, other
figures to 4 significant figures; Parquet and JSON keep full precision) and one escaping of formula-like text.
pandas' ``to_csv`` formats every value in Python, far slower on millions of customers; DuckDB writes
customers.csv from the Parquet file in parallel.

Only columns with few distinct values are dictionary-encoded: for the float columns of model outputs
(hundreds of thousands of distinct values per row group) Parquet's dictionary encoder hashes every
value, overflows its page limit and falls back to plain encoding, which costs a large share of the write
time for a file hardly smaller (docs/performance.md, "Memory and speed design").
"""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forecast.data.ingest import quote_identifier, quote_literal

#: Rows per Parquet row group (and per Arrow conversion): memory grows by one slice while the file is written.
SLICE_ROWS = 500_000
#: Float columns with few distinct values (whole days in model time units), dictionary-encoded like non-floats.
DICTIONARY_FLOAT_COLUMNS = ("recency", "T")
#: First characters that make a spreadsheet run a cell as a formula; such text cells get a leading apostrophe
#: (``copy_to_csv``).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: Data rows a spreadsheet can show (Excel: 1,048,576 rows including the header).
SPREADSHEET_ROWS = 1_048_575
#: Words that make a float column a currency amount in CSV files (``is_money``): the column's name, split at
#: underscores, has one of them (clv, clv_lower_total, revenue_to_date, expected_spend, monetary_value,
#: avg_purchase_value, heuristic_gap, max_acquisition_cost, value_at_risk, new_customer_clv, cac, actual_revenue
#: ...), unless the word follows ``to``: x_to_cac (ltv_to_cac) is a ratio of amounts, revenue_to_date an amount.
MONEY_WORDS = frozenset({"clv", "revenue", "spend", "value", "cost", "gap", "cac"})
#: Decimals of a currency amount in CSV files: cents.
MONEY_DECIMALS = 2
#: Significant figures of every other float in CSV files: rates, probabilities, counts per time, ratios, times
#: (p_alive, mean_p_alive, expected_purchases, purchases_per_year, recency, T, ltv_to_cac ...).
SIGNIFICANT_FIGURES = 4
#: DuckDB types rounded in CSV files; integers (customers, frequency, counts) and text are written as they are.
FLOAT_TYPES = ("DOUBLE", "FLOAT")
#: The column ``frame_to_csv`` numbers a frame's rows in (a name no output column has), not written.
ROW_NUMBER = "__frame_row_number"


def csv_wanted(setting: str, customers: int) -> tuple[bool, str | None]:
    """Whether to write customers.csv under the ``customers_csv`` setting, and a warning when it is skipped."""
    if setting == "never" or (setting == "auto" and customers > SPREADSHEET_ROWS):
        reason = (
            f"customers.csv was not written: {customers:,} customers exceed a spreadsheet's "
            f"{SPREADSHEET_ROWS + 1:,} rows; use customers.parquet (or set customers_csv: always)."
            if setting == "auto"
            else None
        )
        return False, reason
    return True, None


def write_parquet(frame: pd.DataFrame, columns: list[str], path: Path, slice_rows: int = SLICE_ROWS) -> None:
    """Write a DataFrame's index and columns, in the order ``columns``, to one Parquet file.

    Rows are converted to Arrow ``slice_rows`` at a time (one row group each), so memory grows by one
    slice, not by a copy of the table. The file keeps pandas' metadata, so ``pandas.read_parquet`` gives
    back the same dtypes (categories included).

    Parameters
    ----------
    frame
        The table; index levels named in ``columns`` are written as columns.
    columns
        Output columns in order.
    path
        The Parquet file to write (Snappy-compressed).
    slice_rows
        Rows per slice and per row group.
    """
    schema = pa.Schema.from_pandas(frame.iloc[:0].reset_index()[columns], preserve_index=False)
    with pq.ParquetWriter(path, schema, use_dictionary=dictionary_columns(frame, schema)) as writer:
        for start in range(0, max(len(frame), 1), slice_rows):
            rows = slice(start, start + slice_rows)
            arrays = [_arrow_array(_column(frame, f.name)[rows], f.type) for f in schema]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


def _column(frame: pd.DataFrame, name: str) -> pd.Index | pd.api.extensions.ExtensionArray:
    """A column of the frame, or the index level of that name, to be sliced by position."""
    return frame.index.get_level_values(name) if name in frame.index.names else frame[name].array


def _arrow_array(values: pd.Index | pd.api.extensions.ExtensionArray, arrow_type: pa.DataType) -> pa.Array:
    """The Arrow array of a slice of a column, NaN as null. A float slice without NaN is wrapped without a copy:
    Arrow's pandas conversion copies every float column to turn NaN into nulls, a second copy of each slice's
    floats that model outputs, never NaN, do not need."""
    if isinstance(values, pd.arrays.NumpyExtensionArray) and pa.types.is_floating(arrow_type):
        floats = values.to_numpy()
        if not np.isnan(floats).any():
            return pa.array(floats, type=arrow_type)
    return pa.array(values, type=arrow_type, from_pandas=True)


def dictionary_columns(frame: pd.DataFrame, schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: not the index (one value per row), not floats other than
    ``DICTIONARY_FLOAT_COLUMNS``."""
    return [
        f.name
        for f in schema
        if f.name not in frame.index.names and (not pa.types.is_floating(f.type) or f.name in DICTIONARY_FLOAT_COLUMNS)
    ]


def parquet_to_csv(parquet_path: Path, csv_path: Path, threads: int | None = None) -> None:
    """Copy a Parquet file (or a glob of them) to a CSV for spreadsheets (``copy_to_csv``)."""
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        copy_to_csv(con, f"read_parquet({quote_literal(str(parquet_path))})", csv_path)
    finally:
        con.close()


def frame_to_csv(frame: pd.DataFrame, csv_path: Path) -> None:
    """Write a DataFrame's columns (not its index) to a CSV for spreadsheets (``copy_to_csv``), rows in order.

    DuckDB scans an Arrow table in parallel and writes its rows in the order the threads finish (a segment table
    concatenated from others came out of order), so the rows are numbered and written in that order.
    """
    con = duckdb.connect()
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        con.register("frame", table.append_column(ROW_NUMBER, pa.array(np.arange(len(frame)))))
        copy_to_csv(con, "frame", csv_path, order_by=ROW_NUMBER)
    finally:
        con.close()


def copy_to_csv(con: duckdb.DuckDBPyConnection, source: str, csv_path: Path, order_by: str | None = None) -> None:
    """Write the rows of a DuckDB relation to CSV, prefixing text cells a spreadsheet would run as a formula.

    Every CSV the toolkit writes goes through here, so they share one format: a header row, comma separators,
    floats rounded by ``csv_number`` (money to cents, other figures to 4 significant figures) and written in their
    shortest form (2500315.63, 0.1235, 12350.0), integers as they are, missing values as empty fields, and text
    cells that start with one of ``FORMULA_PREFIXES`` prefixed with an apostrophe (a spreadsheet then shows the
    text instead of running it).

    Parameters
    ----------
    con
        The DuckDB connection ``source`` is read with.
    source
        A relation: a table or view name, or a table function such as ``read_parquet('...')``.
    csv_path
        The CSV file to write.
    order_by
        A column of ``source`` that orders the rows and is not written (else the rows come in DuckDB's order).

    Raises
    ------
    OSError
        The file cannot be written (DuckDB's IOException: a full disk, a file-size limit).

    References
    ----------
    OWASP, "CSV Injection" (the formula prefixes and the apostrophe).
    """
    columns = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    prefixes = ", ".join(quote_literal(p) for p in FORMULA_PREFIXES)
    selected = []
    for name, column_type, *_ in columns:
        if name == order_by:
            continue
        column = quote_identifier(name)
        if column_type == "VARCHAR" or column_type.startswith("ENUM"):
            text = f"CAST({column} AS VARCHAR)"
            selected.append(
                f"CASE WHEN left({text}, 1) IN ({prefixes}) THEN '''' || {text} ELSE {text} END AS {column}"
            )
        elif column_type in FLOAT_TYPES:
            selected.append(f"{csv_number(name, column_type)} AS {column}")
        else:
            selected.append(column)
    order = f" ORDER BY {quote_identifier(order_by)}" if order_by is not None else ""
    try:
        con.execute(
            f"COPY (SELECT {', '.join(selected)} FROM {source}{order}) TO {quote_literal(str(csv_path))} "
            "(FORMAT csv, HEADER true, DELIMITER ',')"
        )
    except duckdb.IOException as exc:
        # DuckDB reports a failed write (a full disk, a file-size limit) as its own error: to the run it is a
        # failed write like any other, which atomic_folder turns into the user error that says what to do.
        raise OSError(f"{csv_path} could not be written ({exc})") from None


def is_money(column: str) -> bool:
    """Whether a float column holds currency amounts (rounded to cents in CSV files): its name, split at
    underscores, has one of ``MONEY_WORDS``, and none of them comes after ``to`` (a ratio: ltv_to_cac). Every other
    float column is a rate, probability, count per time, ratio or time (``SIGNIFICANT_FIGURES``)."""
    words = column.lower().split("_")
    ratio = any(word == "to" and after in MONEY_WORDS for word, after in itertools.pairwise(words))
    return not ratio and not MONEY_WORDS.isdisjoint(words)


def csv_number(name: str, column_type: str) -> str:
    """The SQL expression of a float column's values in a CSV file: money rounded to ``MONEY_DECIMALS``, other
    figures to ``SIGNIFICANT_FIGURES`` significant figures (``is_money``); 0, NaN, infinities and NULL unchanged.

    DuckDB's ``round(x, d)`` computes round(x * 10^d) / 10^d: for d from -22 to 22 the power of ten is exact, so
    the result is the double nearest the rounded decimal and prints as it (2500315.63, not 2500315.6299999994).
    Beyond that (|x| below 1e-19 or from 1e22, as a P(alive) of 1e-30) the significant figures come from the
    value's decimal text instead, right at any magnitude but slower.

    Parameters
    ----------
    name
        The column's name.
    column_type
        Its DuckDB type, one of ``FLOAT_TYPES`` (the expression keeps it).
    """
    column = quote_identifier(name)
    if is_money(name):
        return f"round({column}, {MONEY_DECIMALS})"
    decimals = f"CAST({SIGNIFICANT_FIGURES - 1} - floor(log10(abs({column}))) AS INTEGER)"
    as_text = f"CAST(format('{{:.{SIGNIFICANT_FIGURES}g}}', {column}) AS {column_type})"
    # CASE evaluates each branch on the rows it selects only: log10 never sees 0, NaN or an infinity.
    return (
        f"CASE WHEN isfinite({column}) AND abs({column}) >= 1e-19 AND abs({column}) < 1e22 "
        f"THEN round({column}, {decimals}) ELSE {as_text} END"
    )


def write_customer_tables(customers: pd.DataFrame, columns: list[str], folder: Path, csv: bool = True) -> list[Path]:
    """Write ``customers.parquet`` and (unless ``csv`` is false) ``customers.csv`` into ``folder``; return their paths.

    Parameters
    ----------
    customers
        Per-customer table indexed by customer_id.
    columns
        Output columns in order (customer_id, the index, among them).
    """
    written = [folder / "customers.parquet"]
    write_parquet(customers, columns, written[0])
    if csv:
        written.append(folder / "customers.csv")
        parquet_to_csv(written[0], written[1])
    return written
