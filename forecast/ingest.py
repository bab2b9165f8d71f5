"""Read a transaction log with DuckDB, normalise it, and report data-quality problems.

The log becomes one DuckDB relation named ``transactions`` with the columns
``customer_id VARCHAR, ts TIMESTAMP, amount DOUBLE`` plus any configured segment columns.
Nothing is pulled into Python row by row: checks are aggregate queries.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from forecast.config import DataConfig
from forecast.errors import DataError

DATA_SUFFIXES = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
EXAMPLES = 5


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
            raise DataError(
                f"The folder {path} holds no data files (.csv, .txt, .tsv, .parquet). Point data.path at the log."
            )
    elif any(char in spec for char in "*?["):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"No file matches the pattern {spec}. Check data.path in the config.")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"The transaction log {spec} does not exist. Check data.path in the config.")
    formats = {DATA_SUFFIXES.get(p.suffix.lower(), "csv") for p in files}
    if len(formats) > 1:
        raise DataError(f"{spec} mixes CSV and Parquet files ({len(files)} files). Keep one format per data.path.")
    return files


def _file_format(config: DataConfig, files: list[Path]) -> str:
    if config.format != "auto":
        return config.format
    return DATA_SUFFIXES.get(files[0].suffix.lower(), "csv")


def _source_sql(config: DataConfig, files: list[Path], file_format: str) -> str:
    """SQL for the raw rows, every column as read (CSV columns as text, so leading zeros survive)."""
    file_list = "[" + ", ".join(quote_literal(str(p)) for p in files) + "]"
    if file_format == "parquet":
        return f"SELECT * FROM read_parquet({file_list}, union_by_name = true)"
    if file_format == "whitespace":
        names = config.columns or []
        fields = ", ".join(f"parts[{i + 1}] AS {quote_identifier(name)}" for i, name in enumerate(names))
        skip = 1 if config.header else 0
        return (
            f"SELECT {fields} FROM ("
            f"SELECT string_split_regex(trim(line), '\\s+') AS parts FROM read_csv({file_list}, "
            f"columns = {{'line': 'VARCHAR'}}, delim = '\\x01', quote = '', escape = '', header = false, "
            f"skip = {skip}, auto_detect = false) WHERE trim(line) <> '')"
        )
    options = ["all_varchar = true", f"header = {str(config.header).lower()}", "union_by_name = true"]
    if config.delimiter is not None:
        options.append(f"delim = {quote_literal(config.delimiter)}")
    if config.columns:
        options.append("names = [" + ", ".join(quote_literal(c) for c in config.columns) + "]")
    return f"SELECT * FROM read_csv({file_list}, {', '.join(options)})"


@dataclass(frozen=True)
class DataQuality:
    """What ingest saw and did: counts per problem, with the policy applied."""

    rows: int
    customers: int
    first_timestamp: str | None
    last_timestamp: str | None
    null_customer_ids: int = 0
    zero_amounts: int = 0
    negative_amounts: int = 0
    negative_policy: str = "net"
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Transactions:
    """A validated transaction log registered in a DuckDB connection as ``transactions``."""

    connection: duckdb.DuckDBPyConnection
    files: list[Path]
    segment_columns: list[str]
    quality: DataQuality


def _examples(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    rows = con.sql(f"{sql} LIMIT {EXAMPLES}").fetchall()
    return ", ".join(repr(row[0]) if len(row) == 1 else repr(tuple(row)) for row in rows)


def read_transactions(config: DataConfig, connection: duckdb.DuckDBPyConnection | None = None) -> Transactions:
    """Open the configured log, check it, and register it as the ``transactions`` relation.

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
        Missing columns, unparseable timestamps or amounts, non-finite amounts, an empty log,
        or negative amounts under the ``fail`` policy.
    """
    con = connection if connection is not None else duckdb.connect()
    files = resolve_files(config.path)
    file_format = _file_format(config, files)
    where = f"{config.path}" + ("" if len(files) == 1 else f" ({len(files)} files)")
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW raw_log AS {_source_sql(config, files, file_format)}")
        found = [row[0] for row in con.execute("DESCRIBE raw_log").fetchall()]
    except duckdb.Error as exc:
        raise DataError(f"Cannot read {where} as {file_format}: {exc}. Check data.format and the file.") from None

    needed = {"data.customer_id": config.customer_id, "data.timestamp": config.timestamp, "data.amount": config.amount}
    needed.update({f"data.segment_columns[{i}]": c for i, c in enumerate(config.segment_columns)})
    missing = [f"'{col}' ({key})" for key, col in needed.items() if col not in found]
    if missing:
        raise DataError(
            f"{where} has no column {', '.join(missing)}. Columns found: {', '.join(found) or 'none'}. "
            "Map the right names in the config's data section."
        )

    cid, ts, amount = (quote_identifier(c) for c in (config.customer_id, config.timestamp, config.amount))
    if config.timestamp_format:
        parsed_ts = f"try_strptime(CAST({ts} AS VARCHAR), {quote_literal(config.timestamp_format)})"
    else:
        parsed_ts = f"TRY_CAST({ts} AS TIMESTAMP)"
    segments = "".join(
        f", CAST({quote_identifier(c)} AS VARCHAR) AS {quote_identifier(c)}" for c in config.segment_columns
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW typed_log AS
        SELECT CAST({cid} AS VARCHAR) AS customer_id, {ts} AS ts_raw, {parsed_ts} AS ts,
               {amount} AS amount_raw, TRY_CAST({amount} AS DOUBLE) AS amount{segments}
        FROM raw_log"""
    )
    try:
        stats = con.execute(
            """SELECT count(*),
                      count(*) FILTER (WHERE customer_id IS NULL OR trim(customer_id) = ''),
                      count(*) FILTER (WHERE ts IS NULL),
                      count(*) FILTER (WHERE amount IS NULL OR isnan(amount) OR isinf(amount)),
                      count(*) FILTER (WHERE amount = 0),
                      count(*) FILTER (WHERE amount < 0)
               FROM typed_log"""
        ).fetchone()
    except duckdb.Error as exc:
        raise DataError(f"Cannot read {where}: {exc}. Check data.format, data.delimiter and the file.") from None
    assert stats is not None
    rows, null_ids, bad_ts, bad_amounts, zero_amounts, negative_amounts = stats
    if rows == 0:
        raise DataError(f"{where} has no transactions (no rows after the header). Point data.path at a non-empty log.")
    if bad_ts:
        examples = _examples(con, "SELECT ts_raw FROM typed_log WHERE ts IS NULL")
        hint = f"the format {config.timestamp_format!r}" if config.timestamp_format else "ISO dates (YYYY-MM-DD)"
        raise DataError(
            f"{bad_ts:,} of {rows:,} rows in {where} have a '{config.timestamp}' that is not a date or time "
            f"({hint}); examples: {examples}. Fix those rows or set data.timestamp_format."
        )
    if bad_amounts:
        examples = _examples(
            con, "SELECT amount_raw FROM typed_log WHERE amount IS NULL OR isnan(amount) OR isinf(amount)"
        )
        raise DataError(
            f"{bad_amounts:,} of {rows:,} rows in {where} have a '{config.amount}' that is not a finite number; "
            f"examples: {examples}. Fix or remove those rows."
        )
    if negative_amounts and config.negative_amounts == "fail":
        examples = _examples(con, "SELECT customer_id, ts_raw, amount FROM typed_log WHERE amount < 0")
        raise DataError(
            f"{negative_amounts:,} rows in {where} have a negative '{config.amount}' (returns); examples: "
            f"{examples}. Set data.negative_amounts to 'net' or 'drop', or remove them."
        )

    warnings = []
    if null_ids:
        warnings.append(f"{null_ids:,} rows with an empty customer id were dropped.")
    if zero_amounts:
        warnings.append(f"{zero_amounts:,} rows have an amount of 0; they count as purchases.")
    if negative_amounts:
        action = "dropped" if config.negative_amounts == "drop" else "netted into their purchase day"
        warnings.append(f"{negative_amounts:,} rows have a negative amount (returns); they were {action}.")
    keep_negative = "" if config.negative_amounts == "net" else " AND amount >= 0"
    segment_names = "".join(f", {quote_identifier(c)}" for c in config.segment_columns)
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW transactions AS
        SELECT customer_id, ts, amount{segment_names} FROM typed_log
        WHERE customer_id IS NOT NULL AND trim(customer_id) <> ''{keep_negative}"""
    )
    summary = con.execute("SELECT count(DISTINCT customer_id), min(ts), max(ts) FROM transactions").fetchone()
    assert summary is not None
    quality = DataQuality(
        rows=rows,
        customers=summary[0],
        first_timestamp=None if summary[1] is None else str(summary[1]),
        last_timestamp=None if summary[2] is None else str(summary[2]),
        null_customer_ids=null_ids,
        zero_amounts=zero_amounts,
        negative_amounts=negative_amounts,
        negative_policy=config.negative_amounts,
        warnings=warnings,
    )
    return Transactions(connection=con, files=files, segment_columns=list(config.segment_columns), quality=quality)


def fingerprint(files: list[Path]) -> str:
    """SHA-256 over the bytes of every input file, in path order (the input's identity in the manifest)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.fsencode(path.name))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
