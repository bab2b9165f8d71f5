"""Read a transaction log with DuckDB, normalise it, and report data-quality problems.

The log becomes one DuckDB relation named ``transactions`` with the columns
``customer_id VARCHAR, ts TIMESTAMP, amount DOUBLE`` plus any configured segment columns.
Nothing is pulled into Python row by row: checks are aggregate queries.

Every problem the job can handle is handled by a documented policy and counted in ``DataQuality``;
every problem it cannot handle is a ``DataError`` that names the column, the count and the first
line numbers. The policies (README, "Data requirements and policies"):

- timestamps: an ISO string with a UTC offset (``+02:00``, ``Z``) is converted to ``data.timezone``;
  a naive timestamp is taken to be in ``data.timezone`` already (default UTC). Purchase days are
  calendar days in ``data.timezone``.
- unparseable or impossible dates, non-numeric, NaN or infinite amounts: ``data.invalid_rows``
  (``fail`` by default, or ``drop`` and count).
- empty or blank customer ids: dropped and counted. Ids are kept as given (text: leading zeros,
  spaces and unicode survive; ``"007"`` and ``"7"`` are different customers).
- zero amounts: kept as purchases and counted.
- negative amounts (returns): ``data.negative_amounts`` = ``net`` (subtracted from the customer's
  last purchase of that calendar day; a return on a day without a purchase is dropped and counted),
  ``drop``, or ``fail``.
- exact duplicate rows, and repeated order ids when ``data.order_id`` is mapped: ``data.duplicates`` =
  ``keep`` (the default: CDNOW has 255 legitimate identical rows), ``drop`` (keep the first), or ``fail``.
- transactions after as_of: excluded by the summary and counted by ``count_after_as_of``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import glob
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import duckdb

from forecast.config import DataConfig, DuckDBConfig, RunConfig
from forecast.errors import DataError, EngineError

DATA_SUFFIXES = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
EXAMPLES = 5
#: Internal columns added to every raw row: the source file and the row's line (CSV) or row (Parquet) number.
FILE_COLUMN = "__clv_file"
LINE_COLUMN = "__clv_line"
#: An ISO time of day followed by a UTC offset or Z, e.g. ``10:00:00+02:00`` (a date alone has no offset).
OFFSET_PATTERN = r"[T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$"


# Which rows of ``typed_log`` have each problem (the policies in the module docstring).
BAD_TS_SQL = "ts IS NULL"
BAD_AMOUNT_SQL = "(amount IS NULL OR isnan(amount) OR isinf(amount))"
# trim() only where an id starts or ends with a space: trimming every id costs a second at 10M rows.
NULL_ID_SQL = "(customer_id IS NULL OR customer_id = '' OR (starts_with(customer_id, ' ') AND trim(customer_id) = ''))"
SPACED_ID_SQL = "((starts_with(customer_id, ' ') OR ends_with(customer_id, ' ')) AND trim(customer_id) <> '')"
VALID_SQL = f"NOT {NULL_ID_SQL} AND NOT {BAD_TS_SQL} AND NOT {BAD_AMOUNT_SQL}"
USED_SQL = f"{VALID_SQL} AND amount >= 0"  # the rows that become purchases (returns are netted or dropped)
#: The customers whose rows place the summary's ranges (``id_quantiles_sql``): one in this many, by id hash.
SAMPLED_CUSTOMERS_ONE_IN = 256
#: ``id_quantiles_sql`` gives the ids at every 1/ID_QUANTILE_STEPS of those rows.
ID_QUANTILE_STEPS = 64


def quote_identifier(name: str) -> str:
    """Quote a column name for SQL so that no name can inject SQL."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Quote a string literal for SQL."""
    return "'" + text.replace("'", "''") + "'"


def lifetimes_dataset(name: str) -> Path:
    """Path of a data set shipped inside the lifetimes wheel, e.g. ``CDNOW_master.txt``."""
    import importlib.util

    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        raise DataError("The 'lifetimes:' data source needs the lifetimes package: pip install lifetimes==0.11.3.")
    path = Path(spec.origin).parent / "datasets" / name
    if not path.is_file():
        available = sorted(p.name for p in path.parent.iterdir() if p.suffix in {".txt", ".csv"})
        raise DataError(f"lifetimes ships no data set '{name}'. Available: {', '.join(available)}.")
    return path


def resolve_files(spec: str) -> list[Path]:
    """Expand a file, glob or folder into the sorted list of data files it names.

    Raises
    ------
    DataError
        Nothing matches, a folder holds no data files, or files of different formats are mixed.
    """
    if spec.startswith("lifetimes:"):
        return [lifetimes_dataset(spec.removeprefix("lifetimes:"))]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
        if not files:
            others = sorted(p.name for p in path.rglob("*") if p.is_file())[:EXAMPLES]
            found = f" (it holds {', '.join(others)})" if others else " (it is empty)"
            raise DataError(
                f"The folder {path} holds no data files (.csv, .txt, .tsv, .parquet, .pq){found}. "
                "Point data.path at the log."
            )
    elif any(char in spec for char in "*?["):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"No file matches the pattern {spec}. Check data.path in the config.")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"The transaction log {spec} does not exist. Check data.path in the config.")
    by_format: dict[str, list[str]] = {}
    for p in files:
        by_format.setdefault(DATA_SUFFIXES.get(p.suffix.lower(), "csv"), []).append(p.name)
    if len(by_format) > 1:
        listing = "; ".join(f"{fmt}: {', '.join(names[:3])}" for fmt, names in sorted(by_format.items()))
        raise DataError(
            f"{spec} mixes CSV and Parquet files ({len(files)} files; {listing}). Keep one format per data.path."
        )
    return files


def _file_format(config: DataConfig, files: list[Path]) -> str:
    if config.format != "auto":
        return config.format
    return DATA_SUFFIXES.get(files[0].suffix.lower(), "csv")


def _numbered(scan: str, first_line: int) -> str:
    """Number the rows of an order-preserving scan per file, starting at ``first_line``.

    DuckDB scans files in list order and keeps each file's row order (preserve_insertion_order is on
    by default), so a running row number minus the file's first one is the row's place in its file.
    """
    file_col, line_col = quote_identifier(FILE_COLUMN), quote_identifier(LINE_COLUMN)
    return (
        f"SELECT * EXCLUDE (__clv_seq), __clv_seq - min(__clv_seq) OVER (PARTITION BY {file_col}) + {first_line} "
        f"AS {line_col} FROM (SELECT *, row_number() OVER () AS __clv_seq FROM {scan})"
    )


def _source_sql(config: DataConfig, files: list[Path], file_format: str) -> str:
    """SQL for the raw rows, every column as read (CSV columns as text, so leading zeros survive).

    Two internal columns are added: the file the row came from and its line number in that file
    (counting the header as line 1; for Parquet, the row number).
    """
    file_list = "[" + ", ".join(quote_literal(str(p)) for p in files) + "]"
    file_col = quote_literal(FILE_COLUMN)
    if file_format == "parquet":
        line_col = quote_identifier(LINE_COLUMN)
        return (
            f"SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS {line_col} FROM read_parquet("
            f"{file_list}, union_by_name = true, filename = {file_col}, file_row_number = true)"
        )
    if file_format == "whitespace":
        names = config.columns or []
        fields = ", ".join(f"parts[{i + 1}] AS {quote_identifier(name)}" for i, name in enumerate(names))
        lines = (
            f"read_csv({file_list}, columns = {{'line': 'VARCHAR'}}, delim = '\\x01', quote = '', escape = '', "
            f"header = false, auto_detect = false, filename = {file_col})"
        )
        skip_header = f" AND {quote_identifier(LINE_COLUMN)} > 1" if config.header else ""
        return (
            f"SELECT {fields}, {quote_identifier(FILE_COLUMN)}, {quote_identifier(LINE_COLUMN)} FROM ("
            f"SELECT string_split_regex(trim(line), '\\s+') AS parts, * FROM ({_numbered(lines, 1)})"
            f"WHERE trim(coalesce(line, '')) <> ''{skip_header})"
        )
    options = ["all_varchar = true", f"header = {str(config.header).lower()}", "union_by_name = true"]
    if config.delimiter is not None:
        options.append(f"delim = {quote_literal(config.delimiter)}")
    if config.columns:
        options.append("names = [" + ", ".join(quote_literal(c) for c in config.columns) + "]")
    options.append(f"filename = {file_col}")
    return _numbered(f"read_csv({file_list}, {', '.join(options)})", 2 if config.header else 1)


@dataclass(frozen=True)
class DataQuality:
    """What ingest saw and did: counts per problem, with the policy applied.

    ``rows`` counts the rows read; ``rows_used`` those left in ``transactions`` after the policies.
    ``after_as_of`` is filled in by ``count_after_as_of`` once the observation end is known, ``customers``
    (in the whole log, after the policies) by ``count_customers``.
    """

    rows: int
    customers: int | None
    first_timestamp: str | None
    last_timestamp: str | None
    null_customer_ids: int = 0
    zero_amounts: int = 0
    negative_amounts: int = 0
    negative_policy: str = "net"
    warnings: list[str] = field(default_factory=list)
    rows_used: int | None = None
    files: int = 1
    empty_files: list[str] = field(default_factory=list)
    invalid_timestamps: int = 0
    invalid_amounts: int = 0
    invalid_policy: str = "fail"
    timezone: str = "UTC"
    timestamps_with_offset: int = 0
    timestamps_without_offset: int = 0
    ids_with_surrounding_space: int = 0
    returns_without_purchase: int = 0
    duplicate_rows: int = 0
    duplicate_order_ids: int = 0
    duplicates_policy: str = "keep"
    as_of: str | None = None
    after_as_of: int = 0


@dataclass(frozen=True)
class Transactions:
    """A validated transaction log registered in a DuckDB connection as ``transactions``.

    ``read_seconds`` is the wall time ``read_transactions`` took to read, check and register it.
    """

    connection: duckdb.DuckDBPyConnection
    files: list[Path]
    segment_columns: list[str]
    quality: DataQuality
    read_seconds: float = 0.0
    #: ``row_hash_sum_sql`` of every row of ``transactions``, when the checks' pass could take it (a clean log
    #: whose every row is used); the input fingerprint then needs no pass of its own when no row is after as_of.
    row_hash_sum: int | None = None
    #: ``id_quantiles_sql`` of the whole log, when the checks' pass took them (a clean log): the summary's ranges
    #: of customers need no pass of their own when no row is after as_of.
    id_quantiles: list[str] | None = None

    def ends_by(self, as_of: dt.date) -> bool:
        """Whether no usable row is after ``as_of`` (``count_after_as_of`` counted them for that day)."""
        return self.quality.as_of == as_of.isoformat() and self.quality.after_as_of == 0


def id_quantiles_sql() -> str:
    """SQL of an aggregate: the customer ids at every 1/``ID_QUANTILE_STEPS`` of the rows of a fixed sample of
    the customers (one in ``SAMPLED_CUSTOMERS_ONE_IN``, by id hash), from which the summary cuts the log into
    ranges of customers of about equal rows (``rfm.customer_ranges``)."""
    levels = [k / ID_QUANTILE_STEPS for k in range(1, ID_QUANTILE_STEPS)]
    return f"quantile_disc(customer_id, {levels}) FILTER (WHERE hash(customer_id) % {SAMPLED_CUSTOMERS_ONE_IN} = 0)"


def row_hash_sum_sql(segment_columns: list[str]) -> str:
    """SQL of the exact (128-bit) sum of the rows' 64-bit hashes of customer_id, ts, amount and the segment
    columns (the sum that the input fingerprint is made of; see ``registry.input_fingerprint``)."""
    columns = ["customer_id", "ts", "amount", *(quote_identifier(c) for c in segment_columns)]
    return f"coalesce(sum(hash({', '.join(columns)})::HUGEINT), 0)"


def _examples(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    rows = con.sql(f"{sql} LIMIT {EXAMPLES}").fetchall()
    return ", ".join(repr(row[0]) if len(row) == 1 else repr(tuple(row)) for row in rows)


def _located(con: duckdb.DuckDBPyConnection, condition: str, column: str, single_file: bool, unit: str) -> str:
    """The first few offending rows as ``line 3: '2023-02-30'`` (with the file name when there are several)."""
    file_col, line_col = quote_identifier(FILE_COLUMN), quote_identifier(LINE_COLUMN)
    rows = con.execute(
        f"SELECT {file_col}, {line_col}, {column} FROM typed_log WHERE {condition} "
        f"ORDER BY {file_col}, {line_col} LIMIT {EXAMPLES}"
    ).fetchall()
    places = [
        (f"{unit} {line}" if single_file else f"{Path(str(name)).name}:{line}") + f" {value!r}"
        for name, line, value in rows
    ]
    return "first at " + ", ".join(places)


def _missing_columns_message(where: str, missing: list[tuple[str, str]], found: list[str]) -> str:
    hints = []
    for _key, column in missing:
        close = [c for c in found if c.strip().lower() == column.strip().lower()]
        close = close or difflib.get_close_matches(column, found, n=1)
        if close:
            hints.append(f"'{column}' may be '{close[0]}'")
    shown = ", ".join(repr(c) for c in found) or "none"
    message = (
        f"{where} has no column {', '.join(f'{column!r} ({key})' for key, column in missing)}. Columns found: {shown}."
    )
    if hints:
        message += " Did you mean: " + "; ".join(hints) + "?"
    return message + " Map the right names in the config's data section (names are case-sensitive)."


def _timestamp_sql(config: DataConfig, column: str, source_type: str) -> str:
    """SQL turning the raw timestamp column into a naive TIMESTAMP in ``config.timezone``.

    Values with a UTC offset are converted to that zone; naive values are taken to be in it already.
    The connection's TimeZone is set to ``config.timezone``, so a naive string cast to TIMESTAMPTZ is
    read as local time there, and ``timezone(zone, instant)`` gives back the local wall-clock time.
    """
    zone = quote_literal(config.timezone)
    source_type = source_type.upper()
    if config.timestamp_format:
        parsed = f"try_strptime(CAST({column} AS VARCHAR), {quote_literal(config.timestamp_format)})"
        if "%z" in config.timestamp_format or "%Z" in config.timestamp_format:
            return f"timezone({zone}, {parsed})"
        return f"CAST({parsed} AS TIMESTAMP)"
    if "WITH TIME ZONE" in source_type or source_type == "TIMESTAMPTZ":
        return f"timezone({zone}, {column})"
    if source_type.startswith(("TIMESTAMP", "DATE")):
        return f"CAST({column} AS TIMESTAMP)"
    return f"timezone({zone}, TRY_CAST(trim(CAST({column} AS VARCHAR)) AS TIMESTAMPTZ))"


def connect_duckdb(settings: DuckDBConfig) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the configured threads, memory limit and spill folder.

    ``preserve_insertion_order`` is off: no query here relies on it (results are ordered explicitly),
    and it lets DuckDB stream large results without buffering them.
    """
    con = duckdb.connect()
    con.execute(f"SET memory_limit = {quote_literal(settings.memory_limit)}")
    con.execute("SET preserve_insertion_order = false")
    if settings.threads is not None:
        con.execute(f"SET threads = {int(settings.threads)}")
    if settings.temp_directory is not None:
        con.execute(f"SET temp_directory = {quote_literal(settings.temp_directory)}")
    return con


@contextmanager
def duckdb_limits(settings: DuckDBConfig, doing: str | Callable[[], str]) -> Iterator[None]:
    """Turn DuckDB running out of memory or spill space into a EngineError that says what to change.

    Parameters
    ----------
    settings
        The run's ``duckdb`` section, named in the message.
    doing
        What the block does, as a phrase ("summarising customers"), or a callable giving the current one.
    """
    try:
        yield
    except (duckdb.OutOfMemoryException, duckdb.IOException) as exc:
        if isinstance(exc, duckdb.IOException) and "space" not in str(exc).lower():
            raise
        step = doing() if callable(doing) else doing
        spill = settings.temp_directory or "DuckDB's default .tmp folder in the working directory"
        raise EngineError(
            f"DuckDB ran out of memory or spill space while {step[:1].lower()}{step[1:]} "
            f"(duckdb.memory_limit {settings.memory_limit}, duckdb.temp_directory {spill}): "
            f"{str(exc).splitlines()[0].rstrip('.')}. Raise duckdb.memory_limit in the config, or set "
            "duckdb.temp_directory to a folder with free space for DuckDB to spill to; nothing was written."
        ) from None


def read_transactions(config: DataConfig, connection: duckdb.DuckDBPyConnection | None = None) -> Transactions:
    """Open the configured log, check it, apply the data policies and register ``transactions``.

    Parameters
    ----------
    config
        The ``data`` section of the run configuration.
    connection
        DuckDB connection to register the relation in; a new in-memory one by default.

    Returns
    -------
    Transactions
        The connection holding ``transactions(customer_id, ts, amount, <segment columns>)``
        and a data-quality summary.

    Raises
    ------
    DataError
        Missing columns, an empty log, unparseable timestamps or amounts (under ``invalid_rows: fail``),
        negative amounts (under ``negative_amounts: fail``) or duplicates (under ``duplicates: fail``).
    """
    started = time.perf_counter()
    con = connection if connection is not None else duckdb.connect()
    all_files = resolve_files(config.path)
    empty = [p for p in all_files if p.stat().st_size == 0]
    files = [p for p in all_files if p.stat().st_size > 0]
    if not files:
        names = ", ".join(p.name for p in empty[:EXAMPLES])
        raise DataError(
            f"The transaction log {config.path} is empty ({len(empty)} file(s) of 0 bytes: {names}). "
            "Point data.path at a log with a header and rows."
        )
    file_format = _file_format(config, files)
    where = f"{config.path}" + ("" if len(files) == 1 else f" ({len(files)} files)")
    single = len(files) == 1
    unit = "row" if file_format == "parquet" else "line"
    try:
        con.execute(f"SET TimeZone = {quote_literal(config.timezone)}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW raw_log AS {_source_sql(config, files, file_format)}")
        described = con.execute("DESCRIBE raw_log").fetchall()
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        raise DataError(f"Cannot read {where} as {file_format}: {exc}. Check data.format and the file.") from None
    types = {row[0]: str(row[1]) for row in described if row[0] not in (FILE_COLUMN, LINE_COLUMN)}
    found = list(types)

    needed = {"data.customer_id": config.customer_id, "data.timestamp": config.timestamp, "data.amount": config.amount}
    if config.order_id is not None:
        needed["data.order_id"] = config.order_id
    needed.update({f"data.segment_columns[{i}]": c for i, c in enumerate(config.segment_columns)})
    missing = [(key, col) for key, col in needed.items() if col not in types]
    if missing:
        raise DataError(_missing_columns_message(where, missing, found))

    cid, ts, amount = (quote_identifier(c) for c in (config.customer_id, config.timestamp, config.amount))
    parsed_ts = _timestamp_sql(config, ts, types[config.timestamp])
    has_offset = (
        f"regexp_matches(trim({ts}), {quote_literal(OFFSET_PATTERN)})"
        if types[config.timestamp].upper() == "VARCHAR" and not config.timestamp_format
        else "false"
    )
    order = f"CAST({quote_identifier(config.order_id)} AS VARCHAR)" if config.order_id else "NULL"
    segments = "".join(
        f", CAST({quote_identifier(c)} AS VARCHAR) AS {quote_identifier(c)}" for c in config.segment_columns
    )
    file_col, line_col = quote_identifier(FILE_COLUMN), quote_identifier(LINE_COLUMN)
    raw_columns = ", ".join(quote_identifier(c) for c in found)
    # Parquet is re-read column by column faster than a copy could be made, so its typed log is a view; a CSV
    # is parsed once into a table, so that the checks and the summary do not parse it again.
    kind = "VIEW" if file_format == "parquet" else "TABLE"
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP {kind} typed_log AS
        SELECT CAST({cid} AS VARCHAR) AS customer_id, CAST({ts} AS VARCHAR) AS ts_raw, {parsed_ts} AS ts,
               CAST({amount} AS VARCHAR) AS amount_raw, TRY_CAST({amount} AS DOUBLE) AS amount,
               {order} AS order_id, {has_offset} AS has_offset, hash({raw_columns}) AS row_hash,
               {file_col}, {line_col}{segments}
        FROM raw_log"""
        )
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        raise DataError(f"Cannot read {where}: {exc}. Check data.format, data.delimiter and the file.") from None
    try:
        counts = count_problems(con, list(config.segment_columns))
        duplicate_rows = _find_duplicate_rows(con, found)
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        raise DataError(f"Cannot read {where}: {exc}. Check data.format, data.delimiter and the file.") from None
    rows, null_ids, bad_ts, bad_amounts = counts.rows, counts.null_ids, counts.bad_ts, counts.bad_amounts
    zero_amounts, negative_amounts, spaced_ids = counts.zero_amounts, counts.negative_amounts, counts.spaced_ids
    with_offset, without_offset = counts.with_offset, counts.without_offset
    rows_used, first_ts, last_ts = counts.rows_used, counts.first_ts, counts.last_ts
    if rows == 0:
        raise DataError(
            f"{where} has no transactions (no rows after the header; columns {', '.join(found)}). "
            "Point data.path at a non-empty log."
        )
    drop_invalid = config.invalid_rows == "drop"
    if bad_ts and not drop_invalid:
        hint = f"the format {config.timestamp_format!r}" if config.timestamp_format else "ISO dates (YYYY-MM-DD)"
        raise DataError(
            f"{bad_ts:,} of {rows:,} rows in {where} have a '{config.timestamp}' that is not a valid date or time "
            f"({hint}; impossible dates such as 2023-02-30 count too); "
            f"{_located(con, BAD_TS_SQL, 'ts_raw', single, unit)}. Fix those rows, set data.timestamp_format, "
            "or set data.invalid_rows: drop to skip them."
        )
    if bad_amounts and not drop_invalid:
        raise DataError(
            f"{bad_amounts:,} of {rows:,} rows in {where} have a '{config.amount}' that is not a finite number "
            f"(empty, text, NaN or infinite); {_located(con, BAD_AMOUNT_SQL, 'amount_raw', single, unit)}. "
            "Fix or remove those rows, or set data.invalid_rows: drop to skip them."
        )
    if negative_amounts and config.negative_amounts == "fail":
        raise DataError(
            f"{negative_amounts:,} rows in {where} have a negative '{config.amount}' (returns); "
            f"{_located(con, 'amount < 0', 'amount_raw', single, unit)}. "
            "Set data.negative_amounts to 'net' or 'drop', or remove them."
        )

    duplicate_orders = 0
    if config.order_id is not None:
        row = con.execute(
            f"""SELECT count(*) FROM (SELECT row_number() OVER (PARTITION BY order_id ORDER BY {file_col}, {line_col})
                AS n FROM typed_log WHERE order_id IS NOT NULL AND {VALID_SQL}) WHERE n > 1"""
        ).fetchall()[0]
        duplicate_orders = row[0]
    duplicate_condition = f"({file_col}, {line_col}) IN (SELECT ({file_col}, {line_col}) FROM duplicate_rows)"
    if (duplicate_rows or duplicate_orders) and config.duplicates == "fail":
        what = []
        if duplicate_rows:
            what.append(
                f"{duplicate_rows:,} rows repeat an earlier row exactly "
                f"({_located(con, duplicate_condition, 'customer_id', single, unit)})"
            )
        if duplicate_orders:
            what.append(f"{duplicate_orders:,} rows repeat an earlier '{config.order_id}' (data.order_id)")
        raise DataError(
            f"{where}: {'; '.join(what)}. Remove the duplicates, or set data.duplicates to 'drop' (keep the "
            "first) or 'keep' (count them as separate purchases)."
        )

    # The rows that survive the policies, before returns are netted.
    # Every later read of the log filters it again, so a filter that the counts show removes nothing is left out
    # (0.1 s per read of 10 million rows).
    keep = [VALID_SQL] if null_ids or bad_ts or bad_amounts else ["true"]
    if config.duplicates == "drop" and duplicate_rows:
        keep.append(f"NOT {duplicate_condition}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW kept_log AS SELECT * FROM typed_log WHERE {' AND '.join(keep)}")
    if config.duplicates == "drop" and config.order_id is not None:
        con.execute(
            f"""CREATE OR REPLACE TEMP VIEW kept_log AS SELECT * EXCLUDE (__clv_order_n) FROM (
                SELECT *, row_number() OVER (PARTITION BY order_id ORDER BY {file_col}, {line_col}) AS __clv_order_n
                FROM typed_log WHERE {" AND ".join(keep)})
                WHERE order_id IS NULL OR __clv_order_n = 1"""
        )
    segment_names = "".join(f", {quote_identifier(c)}" for c in config.segment_columns)
    returns_without_purchase = 0
    if config.negative_amounts == "net" and negative_amounts:
        returns_without_purchase = _net_returns(con, config.segment_columns)
    else:
        keep_negative = "" if config.negative_amounts == "net" else " WHERE amount >= 0"
        con.execute(
            f"""CREATE OR REPLACE TEMP VIEW transactions AS
            SELECT customer_id, ts, amount{segment_names} FROM kept_log{keep_negative}"""
        )
    if config.duplicates == "drop" and (duplicate_rows or duplicate_orders):
        rows_used = con.execute("SELECT count(*) FROM transactions").fetchall()[0][0]

    warnings = []
    if empty:
        warnings.append(f"{len(empty)} empty file(s) were skipped: {', '.join(p.name for p in empty[:EXAMPLES])}.")
    if bad_ts:
        warnings.append(
            f"{bad_ts:,} rows with an invalid '{config.timestamp}' were dropped (data.invalid_rows: drop); "
            f"{_located(con, BAD_TS_SQL, 'ts_raw', single, unit)}."
        )
    if bad_amounts:
        warnings.append(
            f"{bad_amounts:,} rows with a non-numeric or non-finite '{config.amount}' were dropped "
            f"(data.invalid_rows: drop); {_located(con, BAD_AMOUNT_SQL, 'amount_raw', single, unit)}."
        )
    if null_ids:
        warnings.append(f"{null_ids:,} rows with an empty customer id were dropped.")
    if spaced_ids:
        warnings.append(
            f"{spaced_ids:,} rows have a customer id with leading or trailing spaces; ids are kept as given, "
            "so ' 7' and '7' are different customers."
        )
    if with_offset and without_offset:
        warnings.append(
            f"{with_offset:,} timestamps carry a UTC offset and {without_offset:,} do not: offsets were converted "
            f"to {config.timezone} and the others taken as {config.timezone} (data.timezone)."
        )
    if zero_amounts:
        warnings.append(f"{zero_amounts:,} rows have an amount of 0; they count as purchases.")
    if negative_amounts:
        action = "dropped" if config.negative_amounts == "drop" else "netted into their purchase day"
        warnings.append(f"{negative_amounts:,} rows have a negative amount (returns); they were {action}.")
    if returns_without_purchase:
        warnings.append(
            f"{returns_without_purchase:,} returns fell on a day without a purchase by the same customer and were "
            "dropped (a return is not a purchase)."
        )
    if duplicate_rows or duplicate_orders:
        action = {"keep": "kept as separate purchases", "drop": "dropped (the first was kept)"}[config.duplicates]
        parts = [f"{duplicate_rows:,} rows repeat an earlier row exactly"] if duplicate_rows else []
        if duplicate_orders:
            parts.append(f"{duplicate_orders:,} rows repeat an earlier order id")
        warnings.append(f"{' and '.join(parts)}; they were {action} (data.duplicates: {config.duplicates}).")

    if rows_used == 0:
        raise DataError(
            f"No usable transactions are left in {where} after applying the data policies ({rows:,} rows read; "
            f"{'; '.join(warnings)}). Fix the log or the data section of the config."
        )
    quality = DataQuality(
        rows=rows,
        customers=None,
        first_timestamp=None if first_ts is None else str(first_ts),
        last_timestamp=None if last_ts is None else str(last_ts),
        null_customer_ids=null_ids,
        zero_amounts=zero_amounts,
        negative_amounts=negative_amounts,
        negative_policy=config.negative_amounts,
        warnings=warnings,
        rows_used=rows_used,
        files=len(files),
        empty_files=[str(p) for p in empty],
        invalid_timestamps=bad_ts,
        invalid_amounts=bad_amounts,
        invalid_policy=config.invalid_rows,
        timezone=config.timezone,
        timestamps_with_offset=with_offset,
        timestamps_without_offset=without_offset,
        ids_with_surrounding_space=spaced_ids,
        returns_without_purchase=returns_without_purchase,
        duplicate_rows=duplicate_rows,
        duplicate_order_ids=duplicate_orders,
        duplicates_policy=config.duplicates,
    )
    release_memory(con)
    return Transactions(
        connection=con, files=files, segment_columns=list(config.segment_columns), quality=quality,
        read_seconds=time.perf_counter() - started,
        # A clean log whose every row is used is ``transactions`` row for row.
        row_hash_sum=counts.row_hash_sum if rows_used == rows else None, id_quantiles=counts.id_quantiles,
    )  # fmt: skip


def read_log(config: RunConfig) -> Transactions:
    """``read_transactions`` of a run config's log, in a DuckDB connection with the config's settings."""
    con = connect_duckdb(config.duckdb)
    try:
        with duckdb_limits(config.duckdb, f"reading and checking {config.data.path}"):
            return read_transactions(config.data, con)
    except BaseException:
        con.close()  # DuckDB removes its spill files when the connection closes
        raise


def release_memory(con: duckdb.DuckDBPyConnection) -> None:
    """Hand DuckDB's cached buffers back to the operating system, keeping the configured memory limit.

    After a large aggregation DuckDB keeps its buffers (about 700 MB after summarising 10 million
    transactions); lowering the limit for a moment makes it free them.
    """
    row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    if row is None:
        return
    try:
        con.execute("SET memory_limit = '64MB'")
    except duckdb.Error:
        pass  # nothing to release if DuckDB cannot go that low right now
    finally:
        con.execute(f"SET memory_limit = '{str(row[0]).replace(chr(39), '')}'")


class ProblemCounts(NamedTuple):
    """The rows of ``typed_log`` with each problem, and the span of the usable ones."""

    rows: int
    null_ids: int
    bad_ts: int
    bad_amounts: int
    zero_amounts: int
    negative_amounts: int
    with_offset: int
    without_offset: int
    spaced_ids: int
    rows_used: int
    first_ts: object
    last_ts: object
    #: ``row_hash_sum_sql`` and ``id_quantiles_sql`` over every row, for a clean log only (None when the problems
    #: were counted one by one).
    row_hash_sum: int | None = None
    id_quantiles: list[str] | None = None


def count_problems(con: duckdb.DuckDBPyConnection, segment_columns: list[str]) -> ProblemCounts:
    """Count every problem of ``typed_log`` in one pass.

    Most logs have none of them, and counting each under its filter costs about 1.5 s at 10 million rows.
    A first pass of plain aggregates (0.3 s) proves a log clean when no id is missing or starts with a
    character at or below a space (the smallest id is at least '!'), no timestamp is missing and every amount
    is a number of at least 0 and below infinity; then every count follows from it. Otherwise the problems are
    counted one by one. The same pass sums the rows' hashes for the input fingerprint (``row_hash_sum_sql`` with
    the log's ``segment_columns``) and takes the ``id_quantiles_sql`` that place the summary's ranges: at 10
    million rows 0.27 s and 0.07 s more, against 0.28 s and 0.23 s for passes of their own.
    """
    (rows, ids, smallest_id, timestamps, amounts, nans, smallest_amount, largest_amount, zero_amounts,
     trailing_spaces, with_offset, first_ts, last_ts, hash_sum, quantiles) = con.execute(
        f"""SELECT count(*), count(customer_id), min(customer_id), count(ts), count(amount), count_if(isnan(amount)),
                  min(amount), max(amount), count_if(amount = 0), count_if(ends_with(customer_id, ' ')),
                  count_if(has_offset), min(ts), max(ts), {row_hash_sum_sql(segment_columns)},
                  {id_quantiles_sql()}
           FROM typed_log"""
    ).fetchall()[0]  # fmt: skip
    clean = (
        rows > 0 and ids == rows and smallest_id >= "!" and timestamps == rows and amounts == rows and nans == 0
        and smallest_amount >= 0 and largest_amount < math.inf
    )  # fmt: skip
    if not clean:
        return count_each_problem(con)
    # No id starts with a space, so the spaced ids are those that end with one.
    return ProblemCounts(
        rows, 0, 0, 0, zero_amounts, 0, with_offset, rows - with_offset, trailing_spaces, rows, first_ts, last_ts,
        int(hash_sum), quantiles,
    )  # fmt: skip


def count_each_problem(con: duckdb.DuckDBPyConnection) -> ProblemCounts:
    """Count every problem of ``typed_log`` under its own filter (what ``count_problems`` proves for a clean log)."""
    counts = con.execute(
        f"""SELECT count(*),
                  count(*) FILTER (WHERE {NULL_ID_SQL}),
                  count(*) FILTER (WHERE {BAD_TS_SQL}),
                  count(*) FILTER (WHERE {BAD_AMOUNT_SQL}),
                  count(*) FILTER (WHERE amount = 0),
                  count(*) FILTER (WHERE amount < 0),
                  count(*) FILTER (WHERE has_offset),
                  count(*) FILTER (WHERE NOT has_offset AND ts IS NOT NULL),
                  count(*) FILTER (WHERE {SPACED_ID_SQL}),
                  count(*) FILTER (WHERE {USED_SQL}),
                  min(ts) FILTER (WHERE {USED_SQL}),
                  max(ts) FILTER (WHERE {USED_SQL})
           FROM typed_log"""
    ).fetchall()[0]
    return ProblemCounts(*counts)


def _find_duplicate_rows(con: duckdb.DuckDBPyConnection, raw_columns: list[str]) -> int:
    """Register ``duplicate_rows(file, line)``: the rows that repeat an earlier row exactly; return their count.

    The rows' 64-bit hashes are sorted first and a repeated hash is one equal to the hash before it (at 10
    million rows 0.8 s and 360 MB, against 1.1-1.9 s and 700-830 MB for counting them in a hash table of
    every row); only when a hash repeats are the rows with it listed and compared column by column, in file
    and line order, so the first of equal rows is never listed.
    """
    file_col, line_col = quote_identifier(FILE_COLUMN), quote_identifier(LINE_COLUMN)
    columns = ", ".join(quote_identifier(c) for c in raw_columns)
    con.execute(
        """CREATE OR REPLACE TEMP TABLE repeated_hashes AS SELECT DISTINCT row_hash
        FROM (SELECT row_hash, lag(row_hash) OVER (ORDER BY row_hash) AS previous_hash FROM typed_log)
        WHERE row_hash = previous_hash"""
    )
    row = con.execute("SELECT count(*) FROM repeated_hashes").fetchone()
    # Without a repeated hash no row repeats another: the table stays empty and the log is not read again.
    repeats = bool(row and row[0])
    candidates = "row_hash IN (SELECT row_hash FROM repeated_hashes)" if repeats else "false"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE duplicate_rows AS SELECT {file_col}, {line_col} FROM typed_log
        WHERE {candidates}"""
    )
    con.execute("DROP TABLE repeated_hashes")
    if repeats:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE duplicate_rows AS SELECT {file_col}, {line_col} FROM (
                SELECT {file_col}, {line_col},
                       row_number() OVER (PARTITION BY {columns} ORDER BY {file_col}, {line_col}) AS n
                FROM raw_log SEMI JOIN duplicate_rows USING ({file_col}, {line_col}))
            WHERE n > 1"""
        )
    row = con.execute("SELECT count(*) FROM duplicate_rows").fetchone()
    return int(row[0]) if row else 0


def _net_returns(con: duckdb.DuckDBPyConnection, segment_columns: list[str]) -> int:
    """Register ``transactions`` with each return netted into the customer's last purchase of its day.

    A return (negative amount) is added to the last non-negative row of the same customer on the same
    calendar day, so it never creates a purchase of its own, at day or exact resolution. Returns on a
    day without a purchase have nothing to net into and are dropped; their count is returned.
    """
    file_col, line_col = quote_identifier(FILE_COLUMN), quote_identifier(LINE_COLUMN)
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW transactions AS
        WITH purchases AS (
            SELECT *, CAST(ts AS DATE) AS day,
                   row_number() OVER (PARTITION BY customer_id, CAST(ts AS DATE)
                                      ORDER BY ts DESC, {file_col} DESC, {line_col} DESC) AS last_of_day
            FROM kept_log WHERE amount >= 0),
        returns AS (
            SELECT customer_id, CAST(ts AS DATE) AS day, sum(amount) AS returned
            FROM kept_log WHERE amount < 0 GROUP BY ALL)
        SELECT p.customer_id, p.ts,
               p.amount + CASE WHEN p.last_of_day = 1 THEN coalesce(r.returned, 0.0) ELSE 0.0 END AS amount
               {"".join(", p." + quote_identifier(c) for c in segment_columns)}
        FROM purchases p LEFT JOIN returns r ON r.customer_id = p.customer_id AND r.day = p.day"""
    )
    row = con.execute(
        """SELECT count(*) FROM kept_log k WHERE amount < 0 AND NOT EXISTS (
               SELECT 1 FROM kept_log p WHERE p.customer_id = k.customer_id AND p.amount >= 0
               AND CAST(p.ts AS DATE) = CAST(k.ts AS DATE))"""
    ).fetchall()[0]
    return int(row[0])


def count_after_as_of(transactions: Transactions, as_of: dt.date) -> Transactions:
    """Count the usable transactions after ``as_of`` into the data-quality report (the summary ignores them).

    Returns
    -------
    Transactions
        The same log with ``quality.as_of``, ``quality.after_as_of`` and a warning when any were excluded.
    """
    end = (as_of + dt.timedelta(days=1)).isoformat()
    row = transactions.connection.execute(f"SELECT count(*) FROM transactions WHERE ts >= DATE '{end}'").fetchall()[0]
    after = int(row[0])
    quality = transactions.quality
    warnings = [w for w in quality.warnings if "after as_of" not in w]
    if after:
        warnings.append(f"{after:,} transactions after as_of {as_of.isoformat()} were excluded.")
    quality = dataclasses.replace(quality, as_of=as_of.isoformat(), after_as_of=after, warnings=warnings)
    return dataclasses.replace(transactions, quality=quality)


def count_customers(transactions: Transactions, customers_up_to_as_of: int | None = None) -> Transactions:
    """Count the customers in the whole log into the data-quality report.

    Counting distinct ids takes a pass over the log (a second at 10 million rows), so when no usable row
    is after as_of (``count_after_as_of`` ran and found none) the count of the customers summarised up to
    as_of, ``customers_up_to_as_of``, is the answer and is taken instead.
    """
    quality = transactions.quality
    if customers_up_to_as_of is not None and quality.as_of is not None and quality.after_as_of == 0:
        customers = customers_up_to_as_of
    else:
        row = transactions.connection.execute("SELECT count(DISTINCT customer_id) FROM transactions").fetchone()
        customers = int(row[0]) if row else 0
    return dataclasses.replace(transactions, quality=dataclasses.replace(quality, customers=customers))


def fingerprint(files: list[Path]) -> str:
    """SHA-256 over the bytes of every input file, in path order (the input's identity in the manifest)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.fsencode(path.name))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
