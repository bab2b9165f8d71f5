"""Read a transaction log with DuckDB, normalise it, and report data-quality problems.

The log becomes one DuckDB relation named ``transactions`` with the columns
``customer_id VARCHAR, ts TIMESTAMP, amount DOUBLE`` plus any configured segment columns.
Nothing is pulled into Python row by row: checks are aggregate queries.

Every problem the job can handle is handled by a documented policy and counted in ``DataQuality``;
every problem it cannot handle is a ``DataError`` that names the column, the count and the first
line numbers. The policies (docs/operations.md, "Data checks and model policies"):

- timestamps: an ISO string with a UTC offset (``+02:00``, ``Z``) is converted to ``data.timezone``;
  a naive timestamp is taken to be in ``data.timezone`` already (default UTC). Purchase days are
  calendar days in ``data.timezone``.
- unparseable or impossible dates, dates before 1900-01-01 or after tomorrow (``timestamp_range``), dates far
  outside the bulk of the log (``find_far_dates``: beyond its 0.1% or 99.9% quantile and cut off from it by more
  than ``FAR_DATE_GAP_DAYS`` without a transaction, while such rows are a tiny share), non-numeric, NaN or infinite
  amounts and amounts of 1e29 or more in size: ``data.invalid_rows`` (``fail`` by default, or ``drop`` and count).
  Under ``fail`` the timestamps and amounts are checked first, in one pass over the raw log, before anything is
  built from it.
- hidden files (``._log.csv``, ``.DS_Store``) in a folder or glob: skipped and named in a warning.
- a non-UTF-8 CSV, Parquet files storing the id as text in some and numbers in others, floating-point ids that
  are not whole numbers below 2^53: a ``DataError``. Whole floating-point ids are read as integers, with a warning.
- empty or blank customer ids: dropped and counted. Ids are kept as given (text: leading zeros,
  spaces and unicode survive; ``"007"`` and ``"7"`` are different customers).
- zero amounts: kept as purchases and counted.
- rows matching a ``data.exclude`` filter: left out before anything else, counted per filter.
- ``data.quantity``: a row's amount is ``data.amount`` times it.
- ids written as whole floats in a text file ('13085.0'): read as '13085' when every id is whole, counted.
- negative amounts (returns): ``data.negative_amounts`` = ``net`` (subtracted from the same order's purchase
  day, else from the customer's most recent purchase day within ``data.return_window_days``, never below zero;
  a return without one is dropped and counted), ``drop``, or ``fail``.
- more invalid rows than ``data.invalid_rows_max_share`` under ``drop``: a ``DataError``.
- exact duplicate rows, and repeated order ids when ``data.order_id`` is mapped: ``data.duplicates`` =
  ``keep`` (the default: CDNOW has 255 legitimate identical rows), ``drop`` (keep the first), or ``fail``.
- transactions after as_of: excluded by the summary and counted by ``count_after_as_of``.

``read_transactions`` goes through these steps, one function each, every one leaving a relation behind:
``open_log`` (the files as ``raw_log``, the mapped columns checked), ``register_typed_rows`` (``typed_rows``: the
view of typed columns beside the raw text), ``refuse_invalid_values`` (``data.invalid_rows: fail``, before any copy),
``create_typed_log`` (``typed_log``: ``typed_rows`` copied once), ``count_problems``, ``find_far_dates``,
``find_duplicate_rows`` and ``count_duplicate_order_ids``; the
policies that refuse a log (``refuse_invalid_rows``, ``refuse_negative_amounts``, ``refuse_duplicates``) and those
that keep or drop rows (``register_kept_log``: ``kept_log``; ``register_transactions``: ``transactions``, returns
netted or dropped); and the record of it all (``quality_warnings``, ``data_quality``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import glob
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd

from forecast.config import DataConfig, DuckDBConfig, RowFilter, RunConfig
from forecast.errors import DataError, EngineError, clip

DATA_SUFFIXES = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
EXAMPLES = 5
#: Internal columns added to every raw row: the source file and the row's line (CSV) or row (Parquet) number.
FILE_COLUMN = "__clv_file"
LINE_COLUMN = "__clv_line"
#: An ISO time of day followed by a UTC offset or Z, e.g. ``10:00:00+02:00`` (a date alone has no offset).
OFFSET_PATTERN = r"[T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$"


# Which rows of ``typed_log`` have each problem (the policies in the module docstring).
BAD_TS_SQL = "ts IS NULL"
#: Floating-point customer ids must be whole numbers below this in size (2^53: a double holds every integer below it).
FLOAT_ID_LIMIT = 2**53
#: Timestamps before this day are invalid (``timestamp_range``).
FIRST_VALID_DAY = dt.date(1900, 1, 1)
#: Amounts must be below this in size: the summary sums them exactly as DECIMAL(38, 9), 29 digits before the point.
AMOUNT_LIMIT = 1e29
BAD_AMOUNT_SQL = "(amount IS NULL OR isnan(amount) OR isinf(amount) OR abs(amount) >= 1e29)"
#: A timestamp beyond the bulk of the log that this many days without a transaction cut off from it is a far date
#: (``find_far_dates``): a typing error such as 2026 for 2021, or a placeholder such as 1970-01-01. A lone last row
#: this long after every other one never sets the default as_of (``Transactions.data_end``).
FAR_DATE_GAP_DAYS = 365
#: The quantiles of the log's valid timestamps between which the bulk of the log lies (``TS_BOUNDS_SQL``).
BULK_QUANTILES = (0.001, 0.999)
#: Far dates are invalid only while they are at most this share of the rows with a valid timestamp: more of them are
#: a real spread of the log, not a few typing errors (so a log of under 1,000 rows is never judged by its tails).
FAR_DATES_MAX_SHARE = 0.001
#: In one aggregate of the valid timestamps: the first; where the bulk of the log starts and ends, the
#: ``BULK_QUANTILES`` but never the first or last timestamp itself (which they are in a log of under 1,000 rows);
#: the last but one; the last.
TS_BOUNDS_SQL = (
    f"[min(ts), greatest(quantile_disc(ts, {BULK_QUANTILES[0]}), min(ts, 2)[2]), "
    f"least(quantile_disc(ts, {BULK_QUANTILES[1]}), max(ts, 2)[2]), max(ts, 2)[2], max(ts)]"
)
# trim() only where an id starts with a space: a trim of every id would be the costliest part of the checks.
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


#: A row's place in the log: its file, then its line (or Parquet row) in that file.
FILE_AND_LINE = f"{quote_identifier(FILE_COLUMN)}, {quote_identifier(LINE_COLUMN)}"
#: The rows that ``find_duplicate_rows`` lists as repeating an earlier row exactly.
DUPLICATE_ROW_SQL = f"({FILE_AND_LINE}) IN (SELECT ({FILE_AND_LINE}) FROM duplicate_rows)"
#: The rows that ``find_far_dates`` lists as dated far outside the bulk of the log.
FAR_DATE_SQL = f"({FILE_AND_LINE}) IN (SELECT ({FILE_AND_LINE}) FROM far_dates)"
#: What to check when DuckDB cannot read the log's rows.
READ_ADVICE = "Check data.format, data.delimiter and the file."
#: What DuckDB's CSV reader says of a file that is not UTF-8.
NOT_UTF8_TEXT = "not utf-8 encoded"


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


def is_hidden(path: Path, root: Path) -> bool:
    """Whether a file found under ``root`` is hidden: its name, or a folder's between, starts with '.'.

    macOS leaves ``._log.csv`` (resource forks) and ``.DS_Store`` beside copied files; they are not data.
    """
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def hidden_files(spec: str) -> list[Path]:
    """The hidden files (``is_hidden``) that ``resolve_files`` leaves out of a folder or glob, sorted."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and is_hidden(p, path))
    if any(char in spec for char in "*?[") and not spec.startswith("lifetimes:"):
        matches = {Path(p) for p in glob.glob(spec, recursive=True, include_hidden=True)}
        visible = {Path(p) for p in glob.glob(spec, recursive=True)}
        return sorted(p for p in matches - visible if p.is_file())
    return []


def resolve_files(spec: str) -> list[Path]:
    """Expand a file, glob or folder into the sorted list of data files it names.

    Hidden files (``is_hidden``) in a folder or glob are left out (``hidden_files`` lists them).

    Raises
    ------
    DataError
        Nothing matches, a folder holds no data files, or files of different formats are mixed.
    """
    if spec.startswith("lifetimes:"):
        return [lifetimes_dataset(spec.removeprefix("lifetimes:"))]
    path = Path(spec)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and not is_hidden(p, path)
        )
        if not files:
            others = sorted(p.name for p in path.rglob("*") if p.is_file() and not is_hidden(p, path))[:EXAMPLES]
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


def _numbered(scan: str, first_line: int, single_file: bool = False) -> str:
    """Number the rows of an order-preserving scan per file, starting at ``first_line``.

    DuckDB scans files in list order and keeps each file's row order (preserve_insertion_order is on
    by default), so a running row number minus the file's first one is the row's place in its file.
    In a ``single_file`` the running number is the place already: without the file's first number (a window over
    every row, held in memory) the numbering streams.
    """
    file_col, line_col = quote_identifier(FILE_COLUMN), quote_identifier(LINE_COLUMN)
    if single_file:
        return f"SELECT *, row_number() OVER () + {first_line - 1} AS {line_col} FROM {scan}"
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
    single_file = len(files) == 1
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
            f"SELECT string_split_regex(trim(line), '\\s+') AS parts, * FROM ({_numbered(lines, 1, single_file)})"
            f"WHERE trim(coalesce(line, '')) <> ''{skip_header})"
        )
    options = ["all_varchar = true", f"header = {str(config.header).lower()}", "union_by_name = true"]
    if config.delimiter is not None:
        options.append(f"delim = {quote_literal(config.delimiter)}")
    if config.columns:
        options.append("names = [" + ", ".join(quote_literal(c) for c in config.columns) + "]")
    options.append(f"filename = {file_col}")
    return _numbered(f"read_csv({file_list}, {', '.join(options)})", 2 if config.header else 1, single_file)


@dataclass(frozen=True)
class DataQuality:
    """What ingest saw and did: counts per problem, with the policy applied.

    ``rows`` counts the rows read (with those ``data.exclude`` left out); ``rows_used`` those left in
    ``transactions`` after the policies.
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
    #: Rows with an invalid timestamp, amount or both, dropped under ``data.invalid_rows: drop``.
    invalid_rows: int = 0
    #: Rows dated far outside the bulk of the log (``find_far_dates``), counted in ``invalid_timestamps`` too.
    far_dates: int = 0
    invalid_policy: str = "fail"
    timezone: str = "UTC"
    timestamps_with_offset: int = 0
    timestamps_without_offset: int = 0
    ids_with_surrounding_space: int = 0
    returns_without_purchase: int = 0
    #: Purchase days whose returns exceeded them (netted to zero), under ``data.negative_amounts: net``.
    returns_over_purchase: int = 0
    #: Rows ``data.exclude`` left out (included in ``rows``), and how many each filter matched.
    excluded_rows: int = 0
    excluded_by_filter: dict[str, int] = field(default_factory=dict)
    #: Customer ids written as whole floating-point numbers in a text file ('13085.0'), read as '13085'.
    float_text_ids: int = 0
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
    #: ``file_identities`` of the input files taken before they were read: ``check_input_unchanged`` compares them
    #: with the files as they are just before a run publishes.
    identities: tuple[FileIdentity, ...] = ()
    #: The last valid timestamp but one (``TS_BOUNDS_SQL``), for ``data_end``.
    last_but_one_timestamp: str | None = None

    def ends_by(self, as_of: dt.date) -> bool:
        """Whether no usable row is after ``as_of`` (``count_after_as_of`` counted them for that day)."""
        return self.quality.as_of == as_of.isoformat() and self.quality.after_as_of == 0

    @property
    def data_end(self) -> str | None:
        """Where the data end: the last usable timestamp, unless it is a lone row more than ``FAR_DATE_GAP_DAYS``
        after every other one; then the one before it.

        ``find_far_dates`` makes such a row invalid in a log large enough for one row to be a tiny share; in a
        smaller one (a row dated 2026 in 300 rows of 2021) it is kept, but the default as_of must not follow it.
        """
        last, before = self.quality.last_timestamp, self.last_but_one_timestamp
        if last is None or before is None:
            return last
        alone = dt.datetime.fromisoformat(last) - dt.datetime.fromisoformat(before)
        return before if alone > dt.timedelta(days=FAR_DATE_GAP_DAYS) else last


def id_quantiles_sql() -> str:
    """SQL of an aggregate: the customer ids at every 1/``ID_QUANTILE_STEPS`` of the rows of a fixed sample of
    the customers (one in ``SAMPLED_CUSTOMERS_ONE_IN``, by id hash), from which the summary cuts the log into
    ranges of customers of about equal rows (``summary.customer_ranges``)."""
    levels = [k / ID_QUANTILE_STEPS for k in range(1, ID_QUANTILE_STEPS)]
    return f"quantile_disc(customer_id, {levels}) FILTER (WHERE hash(customer_id) % {SAMPLED_CUSTOMERS_ONE_IN} = 0)"


def row_hash_sum_sql(segment_columns: list[str]) -> str:
    """SQL of the exact (128-bit) sum of the rows' 64-bit hashes of customer_id, ts, amount and the segment
    columns (the sum that ``fingerprints.rows_up_to_as_of_fingerprint`` is made of)."""
    columns = ["customer_id", "ts", "amount", *(quote_identifier(c) for c in segment_columns)]
    return f"coalesce(sum(hash({', '.join(columns)})::HUGEINT), 0)"


# --- opening the source -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSource:
    """The log's files, registered in the connection as the view ``raw_log``, and the raw columns DuckDB found."""

    path: str
    files: list[Path]
    empty_files: list[Path]
    file_format: str
    #: The raw columns and their DuckDB types, without the internal file and line columns.
    column_types: dict[str, str]
    #: Hidden files in the folder or glob, left out (``hidden_files``) and named in a warning.
    hidden_files: list[Path] = field(default_factory=list)
    #: ``file_identities`` of the files taken before they were opened, to tell a file changed mid-read.
    identities: tuple[FileIdentity, ...] = ()

    @property
    def where(self) -> str:
        """The log as the messages name it: ``data.path``, with the number of files when there are several."""
        return _where(self.path, self.files)

    @property
    def single_file(self) -> bool:
        return len(self.files) <= 1

    @property
    def unit(self) -> str:
        """What a row's number counts in its file: lines of text, or Parquet and DataFrame rows."""
        return "row" if self.file_format in ("parquet", "frame") else "line"


def _where(path: str, files: list[Path]) -> str:
    return path + ("" if len(files) <= 1 else f" ({len(files)} files)")


@contextmanager
def _unreadable_as_data_error(what: str, advice: str, identities: tuple[FileIdentity, ...] = ()) -> Iterator[None]:
    """Turn a DuckDB error while reading ``what`` into a DataError ending with ``advice``.

    When one of the files of ``identities`` changed since they were taken, that is the cause, and the message says
    so instead of DuckDB's (a file rewritten mid-read looks corrupt to DuckDB). Otherwise the message quotes the
    first paragraph of DuckDB's (``duckdb_first_paragraph``). Running out of memory is not the log's fault: it passes
    through for ``duckdb_limits`` to explain.
    """
    try:
        yield
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        change = changed_input(identities)
        if change is not None:
            raise DataError(
                f"The input file {change} while the run read it; nothing was written. Run again when the file is "
                "complete (write new logs beside the old one and rename them into place)."
            ) from None
        if NOT_UTF8_TEXT in str(exc):
            raise DataError(_not_utf8_message(what, str(exc))) from None
        raise DataError(f"Cannot read {what}: {duckdb_first_paragraph(str(exc))}. {advice}") from None


#: Where DuckDB's error text stops being its first paragraph: a blank line, the query quoted with a caret under it
#: (``LINE 1: ...``), the CSV reader's list of fixes, its sniffer's search space or its settings (``  file = ...``).
DUCKDB_DETAILS = re.compile(r"^\s*$|^LINE \d+:|^Possible fixes|^The search space used|^\s+\w+ = ", re.MULTILINE)
#: Longest part of a DuckDB error that a message quotes.
DUCKDB_TEXT_LIMIT = 400


def duckdb_first_paragraph(error: str) -> str:
    """The first paragraph of a DuckDB error text, on one line: what failed, without DuckDB's details.

    The details (``DUCKDB_DETAILS``) run to dozens of lines; the file they name (``file = ...``) is kept when the
    paragraph does not name it, as it tells which file of several failed.
    """
    details = DUCKDB_DETAILS.search(error, 1)
    paragraph = " ".join(error[: details.start() if details else len(error)].split()).rstrip(".")
    paragraph = paragraph or " ".join(error.split())
    file = re.search(r"^\s*file = (.+)$", error, re.MULTILINE)
    if file and file.group(1).strip() not in paragraph:
        paragraph += f" (in {file.group(1).strip()})"
    return clip(paragraph, DUCKDB_TEXT_LIMIT)


def _not_utf8_message(what: str, error: str) -> str:
    """A one-paragraph DataError message for a CSV that is not UTF-8, from DuckDB's sniffer report ``error``.

    The report names the file (``file = ...``) and the line (``CSV Error on Line: N``) when DuckDB knows them.
    """
    file = re.search(r"^\s*file = (.+)$", error, re.MULTILINE)
    line = re.search(r"CSV Error on Line: (\d+)", error)
    name = file.group(1).strip() if file else what
    place = f"{name}, line {line.group(1)}" if line else name
    return (
        f"{place} is not UTF-8 text (it is probably in a Windows or Latin encoding such as CP1252, where 'café' is "
        f"stored as other bytes). Re-encode it as UTF-8 (e.g. iconv -f CP1252 -t UTF-8 {Path(name).name} > "
        f"{Path(name).stem}-utf8{Path(name).suffix}) and point data.path at the new file."
    )


def _split_empty_files(path: str, files: list[Path]) -> tuple[list[Path], list[Path]]:
    """The files with bytes in them, and the empty ones (skipped, and named in a warning).

    Raises
    ------
    DataError
        Every file is empty.
    """
    empty = [p for p in files if p.stat().st_size == 0]
    non_empty = [p for p in files if p.stat().st_size > 0]
    if not non_empty:
        names = ", ".join(p.name for p in empty[:EXAMPLES])
        raise DataError(
            f"The transaction log {path} is empty ({len(empty)} file(s) of 0 bytes: {names}). "
            "Point data.path at a log with a header and rows."
        )
    return non_empty, empty


class FileIdentity(NamedTuple):
    """What tells a file apart from the file that replaces or rewrites it: its path, inode, size and mtime."""

    path: str
    inode: int
    size: int
    mtime_ns: int


def file_identities(files: list[Path]) -> tuple[FileIdentity, ...]:
    """The identity of each input file, to be compared before publishing (``check_input_unchanged``)."""
    identities = []
    for path in files:
        stat = path.stat()
        identities.append(FileIdentity(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(identities)


def changed_input(identities: tuple[FileIdentity, ...]) -> str | None:
    """The first file of ``identities`` that changed since they were taken, as ``'<path> was removed'`` or
    ``'<path> was replaced or rewritten'``; None when every file is as it was."""
    for before in identities:
        path = Path(before.path)
        try:
            now = file_identities([path])[0]
        except OSError:
            now = None
        if now != before:
            return f"{path} was {'removed' if now is None else 'replaced or rewritten'}"
    return None


def check_input_unchanged(identities: tuple[FileIdentity, ...]) -> None:
    """Raise a DataError if an input file was replaced, rewritten or removed since it was first read.

    DuckDB reads the log's files again for each query, so a log replaced while a run reads it would give figures
    that mix the old and the new file; such a run must not publish.
    """
    change = changed_input(identities)
    if change is not None:
        raise DataError(
            f"The input file {change} while the run read it, so its figures may mix two versions of the log; "
            "nothing was published. Run again once the log is complete (write new logs beside the old one and "
            "rename them into place)."
        )


def open_log(
    con: duckdb.DuckDBPyConnection, config: DataConfig, identities: tuple[FileIdentity, ...] = ()
) -> LogSource:
    """Register the configured files as the view ``raw_log`` and check that the mapped columns are there.

    Parameters
    ----------
    con
        The connection to register ``raw_log`` in.
    config
        The ``data`` section of the run configuration.
    identities
        ``file_identities`` of the files, taken before this: a DuckDB error after one of them changed is reported
        as that change.

    Raises
    ------
    DataError
        No file, only empty files, files DuckDB cannot read in the configured format, or a mapped column missing.
    """
    files, empty = _split_empty_files(config.path, resolve_files(config.path))
    file_format = _file_format(config, files)
    where = f"{_where(config.path, files)} as {file_format}"
    with _unreadable_as_data_error(where, "Check data.format and the file.", identities):
        con.execute(f"SET TimeZone = {quote_literal(config.timezone)}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW raw_log AS {_source_sql(config, files, file_format)}")
        types = _raw_column_types(con)
    source = LogSource(config.path, files, empty, file_format, types, hidden_files(config.path), identities)
    _check_columns(config, source)
    with _unreadable_as_data_error(source.where, READ_ADVICE, identities):
        _check_id_kinds(con, config, source)
        _check_float_ids(con, config, source)
    return source


def _raw_column_types(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The columns of ``raw_log`` and their DuckDB types, without the internal file and line columns."""
    described = con.execute("DESCRIBE raw_log").fetchall()
    return {row[0]: str(row[1]) for row in described if row[0] not in (FILE_COLUMN, LINE_COLUMN)}


#: How a log given as a pandas DataFrame is named in messages, and its "file format".
FRAME = "the DataFrame"


def open_frame(con: duckdb.DuckDBPyConnection, config: DataConfig, frame: pd.DataFrame) -> LogSource:
    """Register a pandas DataFrame as the view ``raw_log``, as ``open_log`` registers files.

    Its rows are numbered from 0 as pandas' ``iloc`` counts them; the frame is read in place, not copied.

    Raises
    ------
    DataError
        A mapped column missing.
    """
    con.execute(f"SET TimeZone = {quote_literal(config.timezone)}")
    con.register("__clv_frame", frame)
    file_col, line_col = quote_identifier(FILE_COLUMN), quote_identifier(LINE_COLUMN)
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW raw_log AS SELECT *, {quote_literal(FRAME)} AS {file_col},
            row_number() OVER () - 1 AS {line_col} FROM __clv_frame"""
    )
    source = LogSource(FRAME, [], [], "frame", _raw_column_types(con))
    _check_columns(config, source)
    _check_float_ids(con, config, source)
    return source


def _id_kind(physical_type: str, converted_type: str | None) -> str:
    """What a Parquet column's physical and converted types make its values: text, integer or float."""
    if converted_type == "DECIMAL" or physical_type in ("FLOAT", "DOUBLE"):
        return "float"
    return "integer" if physical_type.startswith("INT") else "text"


def _check_id_kinds(con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource) -> None:
    """Raise a DataError when the Parquet files store the customer id as text in some and as numbers in others.

    Read together, 42 and '00042' would both become text and one customer two.
    """
    if source.file_format != "parquet" or source.single_file:
        return
    file_list = "[" + ", ".join(quote_literal(str(p)) for p in source.files) + "]"
    rows = con.execute(
        f"SELECT file_name, type, converted_type FROM parquet_schema({file_list}) WHERE name = ?",
        [config.customer_id],
    ).fetchall()
    by_kind: dict[str, list[str]] = {}
    for name, physical_type, converted_type in rows:
        by_kind.setdefault(_id_kind(str(physical_type), converted_type), []).append(Path(str(name)).name)
    if "text" in by_kind and len(by_kind) > 1:
        listing = "; ".join(f"{kind}: {', '.join(names[:3])}" for kind, names in sorted(by_kind.items()))
        raise DataError(
            f"{source.where} stores '{config.customer_id}' (data.customer_id) as text in some files and as numbers "
            f"in others ({listing}), so an id such as '00042' in one and 42 in another would count as two "
            "customers. Export the ids with one type in every file (text keeps leading zeros)."
        )


def _float_ids(config: DataConfig, source: LogSource) -> bool:
    """Whether the log stores the customer id as floating-point numbers (read as integers when they are whole)."""
    return source.column_types[config.customer_id].upper() in ("FLOAT", "DOUBLE", "REAL")


def _check_float_ids(con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource) -> None:
    """Raise a DataError when floating-point ids are not whole numbers or not below 2^53 in size.

    A double holds every integer only up to 2^53; above it different ids may have been stored as one number.
    """
    if not _float_ids(config, source):
        return
    cid = quote_identifier(config.customer_id)
    condition = f"NOT isnan({cid}) AND (abs({cid}) >= {FLOAT_ID_LIMIT} OR {cid} <> trunc({cid}))"
    rows = con.execute(
        f"SELECT {FILE_AND_LINE}, {cid} FROM raw_log WHERE {condition} ORDER BY {FILE_AND_LINE} LIMIT {EXAMPLES}"
    ).fetchall()
    if rows:
        places = ", ".join(
            f"{source.unit if source.single_file else Path(str(name)).name} {line} {value!r}"
            for name, line, value in rows
        )
        raise DataError(
            f"{source.where} stores '{config.customer_id}' (data.customer_id) as floating-point numbers, and some "
            f"are not whole numbers below 2^53 = {FLOAT_ID_LIMIT:,} (first at {places}): beyond that a float "
            "cannot tell neighbouring ids apart, so customers may have been merged. Export the ids as integers or "
            "text (e.g. df['customer_id'].astype('Int64') or astype(str) before writing the Parquet file)."
        )


def _check_columns(config: DataConfig, source: LogSource) -> None:
    """Raise a DataError naming every mapped column the log lacks, with the nearest names it has."""
    needed = {"data.customer_id": config.customer_id, "data.timestamp": config.timestamp, "data.amount": config.amount}
    if config.order_id is not None:
        needed["data.order_id"] = config.order_id
    if config.quantity is not None:
        needed["data.quantity"] = config.quantity
    needed.update({f"data.segment_columns[{i}]": c for i, c in enumerate(config.segment_columns)})
    needed.update({f"data.exclude[{i}].column": f.column for i, f in enumerate(config.exclude)})
    missing = [(key, col) for key, col in needed.items() if col not in source.column_types]
    if missing:
        raise DataError(_missing_columns_message(source.where, missing, list(source.column_types)))


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


# --- the typed log ------------------------------------------------------------------------------------


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


def timestamp_range(config: DataConfig) -> tuple[dt.date, dt.date]:
    """The first day a valid timestamp may fall on, and the first day after the last one (exclusive).

    A purchase before 1900 or after tomorrow in ``data.timezone`` (a day of slack for clocks and zones) is a
    typing error such as 3020 for 2020 or 0202 for 2022; taken as given it would move the default as_of
    centuries away or make every recency meaningless, so it counts as an invalid timestamp.
    """
    today = dt.datetime.now(ZoneInfo(config.timezone)).date()
    return FIRST_VALID_DAY, today + dt.timedelta(days=2)


def _in_range_sql(config: DataConfig, column: str) -> str:
    """``column`` where it is inside ``timestamp_range``, NULL (an invalid timestamp) outside it."""
    first, after_last = timestamp_range(config)
    return (
        f"CASE WHEN {column} >= TIMESTAMP '{first.isoformat()}' AND {column} < TIMESTAMP '{after_last.isoformat()}' "
        f"THEN {column} END"
    )


def _customer_id_sql(config: DataConfig, source: LogSource) -> str:
    """SQL of the customer id as text: floating-point ids (whole, ``_check_float_ids``) as integers, 42.0 as '42'."""
    cid = quote_identifier(config.customer_id)
    if _float_ids(config, source):
        return f"CASE WHEN NOT isnan({cid}) THEN CAST(CAST({cid} AS BIGINT) AS VARCHAR) END"
    return f"CAST({cid} AS VARCHAR)"


def _filter_sql(row_filter: RowFilter) -> str:
    """SQL true for the rows ``row_filter`` leaves out, comparing the column's text (never NULL)."""
    column = f"CAST({quote_identifier(row_filter.column)} AS VARCHAR)"
    if row_filter.equals is not None:
        test = f"{column} = {quote_literal(row_filter.equals)}"
    elif row_filter.starts_with is not None:
        test = f"starts_with({column}, {quote_literal(row_filter.starts_with)})"
    else:
        test = f"{column} IN ({', '.join(quote_literal(v) for v in row_filter.in_ or [])})"
    return f"coalesce({test}, false)"


def excluded_sql(config: DataConfig) -> str:
    """SQL true for the rows of ``raw_log`` that ``data.exclude`` leaves out."""
    return " OR ".join(_filter_sql(f) for f in config.exclude) or "false"


def _amount_sql(config: DataConfig) -> tuple[str, str]:
    """SQL of a row's amount as a number (NULL when not one) and as the text that messages quote.

    With ``data.quantity`` the amount is the unit price times the quantity, quoted as ``'2.55 x 6'``.
    """
    amount = quote_identifier(config.amount)
    if config.quantity is None:
        return f"TRY_CAST({amount} AS DOUBLE)", f"CAST({amount} AS VARCHAR)"
    quantity = quote_identifier(config.quantity)
    return (
        f"TRY_CAST({amount} AS DOUBLE) * TRY_CAST({quantity} AS DOUBLE)",
        f"coalesce(CAST({amount} AS VARCHAR), '') || ' x ' || coalesce(CAST({quantity} AS VARCHAR), '')",
    )


def amount_name(config: DataConfig) -> str:
    """The amount as the messages name it: ``'amount'``, or ``'Price' x 'Quantity'`` with ``data.quantity``."""
    return f"'{config.amount}'" + ("" if config.quantity is None else f" x '{config.quantity}'")


def typed_log_sql(config: DataConfig, source: LogSource) -> str:
    """SQL of the rows of ``raw_log`` with typed columns, from which every check and every later read start.

    The rows ``data.exclude`` leaves out are not in it. Columns: ``customer_id`` (text, as given; whole
    floating-point ids as integers), ``ts`` (naive TIMESTAMP in ``data.timezone``, NULL when invalid or outside
    ``timestamp_range``), ``amount`` (DOUBLE, NULL when not a number; times ``data.quantity`` when mapped), the raw
    texts ``ts_raw`` and ``amount_raw`` that messages quote,
    ``order_id`` (NULL unless ``data.order_id`` is mapped), ``has_offset`` (the raw timestamp carries a UTC
    offset), ``row_hash`` (a hash of every raw column, for finding exact duplicates), the file and line, and the
    segment columns as text.
    """
    types = source.column_types
    ts = quote_identifier(config.timestamp)
    amount, amount_raw = _amount_sql(config)
    has_offset = (
        f"regexp_matches(trim({ts}), {quote_literal(OFFSET_PATTERN)})"
        if types[config.timestamp].upper() == "VARCHAR" and not config.timestamp_format
        else "false"
    )
    order = f"CAST({quote_identifier(config.order_id)} AS VARCHAR)" if config.order_id else "NULL"
    segments = "".join(
        f", CAST({quote_identifier(c)} AS VARCHAR) AS {quote_identifier(c)}" for c in config.segment_columns
    )
    raw_columns = ", ".join(quote_identifier(c) for c in types)
    return f"""
        SELECT * REPLACE ({_in_range_sql(config, "ts")} AS ts) FROM (
        SELECT {_customer_id_sql(config, source)} AS customer_id, CAST({ts} AS VARCHAR) AS ts_raw,
               {_timestamp_sql(config, ts, types[config.timestamp])} AS ts,
               {amount_raw} AS amount_raw, {amount} AS amount,
               {order} AS order_id, {has_offset} AS has_offset, hash({raw_columns}) AS row_hash,
               {quote_identifier(FILE_COLUMN)}, {quote_identifier(LINE_COLUMN)}{segments}
        FROM raw_log{"" if not config.exclude else f" WHERE NOT ({excluded_sql(config)})"})"""


def register_typed_rows(con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource) -> None:
    """Register ``typed_rows``, the view of ``typed_log_sql``: the raw log read with typed columns, nothing copied."""
    with _unreadable_as_data_error(source.where, READ_ADVICE, source.identities):
        con.execute(f"CREATE OR REPLACE TEMP VIEW typed_rows AS {typed_log_sql(config, source)}")


def _typed_log_is_view(source: LogSource) -> bool:
    """Whether ``typed_log`` is a view of ``typed_rows`` (Parquet) rather than a table copied from it."""
    return source.file_format == "parquet"


def create_typed_log(con: duckdb.DuckDBPyConnection, source: LogSource) -> None:
    """Register ``typed_log`` from ``typed_rows`` (``register_typed_rows``): a view of a Parquet log, a table of a
    CSV one.

    Parquet is re-read column by column faster than a copy could be made, so its typed log is a view; a CSV
    is parsed once into a table, so that the checks and the summary do not parse it again.
    """
    kind = "VIEW" if _typed_log_is_view(source) else "TABLE"
    with _unreadable_as_data_error(source.where, READ_ADVICE, source.identities):
        con.execute(f"CREATE OR REPLACE TEMP {kind} typed_log AS SELECT * FROM typed_rows")


class InvalidValues(NamedTuple):
    """How many rows a typed relation has, and how many with an invalid timestamp or amount (``BAD_TS_SQL``,
    ``BAD_AMOUNT_SQL``)."""

    rows: int
    bad_ts: int
    bad_amounts: int


def count_invalid_values(con: duckdb.DuckDBPyConnection) -> InvalidValues:
    """Count the rows of ``typed_rows`` and those with an invalid timestamp or amount, in one streaming aggregate.

    This reads the raw log once with the typed log's own casts and range, and keeps nothing but three counts: no
    copy, no hash, no sort.
    """
    row = con.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE {BAD_TS_SQL}), count(*) FILTER (WHERE {BAD_AMOUNT_SQL})
            FROM typed_rows"""
    ).fetchall()[0]
    return InvalidValues(*(int(n) for n in row))


def refuse_invalid_values(con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource) -> None:
    """Apply ``data.invalid_rows: fail`` before the log is copied, counted or searched: refuse invalid rows at once.

    One pass over the raw log (``count_invalid_values`` of ``typed_rows``) finds whether any timestamp or amount is
    invalid; only then are the first of them located (``_refuse_bad_values``). A log with a bad amount on its last
    line is thus refused after a plain scan, not after the typed log, its problem counts and its duplicate search.
    Under ``drop`` nothing is checked here: the rows are counted and dropped later.

    Raises
    ------
    DataError
        Under ``fail``, a row with an invalid timestamp or amount, quoting the first lines.
    """
    if config.invalid_rows != "fail":
        return
    with _unreadable_as_data_error(source.where, READ_ADVICE, source.identities):
        found = count_invalid_values(con)
        _refuse_bad_values(con, config, source, found, "typed_rows")


# --- counting the problems ----------------------------------------------------------------------------


class ProblemCounts(NamedTuple):
    """The rows of ``typed_log`` with each problem, and the span of the usable ones."""

    rows: int
    null_ids: int
    bad_ts: int
    bad_amounts: int
    #: Rows with an invalid timestamp, an invalid amount or both.
    invalid: int
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
    #: ``TS_BOUNDS_SQL``: the first valid timestamp, the bulk's start and end, the last but one and the last.
    ts_bounds: list[dt.datetime] | None = None
    #: Rows dated far outside the bulk of the log (``find_far_dates``; counted in ``bad_ts`` too), and the
    #: ``BULK_QUANTILES`` they were judged by.
    far_dates: int = 0
    bulk: tuple[dt.datetime, dt.datetime] | None = None


def count_problems(con: duckdb.DuckDBPyConnection, segment_columns: list[str]) -> ProblemCounts:
    """Count every problem of ``typed_log``, in one pass of plain aggregates when the log is clean.

    Most logs have none of the problems, and counting each under its own filter costs several passes' worth of
    work. A first pass of plain aggregates (count, min, max) proves a log clean when no id is missing or starts
    with a character at or below a space (the smallest id is at least '!'), no timestamp is missing and every
    amount is a number of at least 0 and below infinity; then every count follows from it. Otherwise the problems
    are counted one by one (``count_each_problem``). The same pass sums the rows' hashes for the fingerprint of the
    rows up to as_of (``row_hash_sum_sql`` with the log's ``segment_columns``) and takes the ``id_quantiles_sql``
    that place the summary's ranges, so that neither needs a pass of its own, and the timestamps' quantiles
    (``TS_BOUNDS_SQL``) that ``find_far_dates`` judges the log's tails by.
    """
    (rows, ids, smallest_id, timestamps, amounts, nans, smallest_amount, largest_amount, zero_amounts,
     trailing_spaces, with_offset, first_ts, last_ts, hash_sum, quantiles, ts_bounds) = con.execute(
        f"""SELECT count(*), count(customer_id), min(customer_id), count(ts), count(amount), count_if(isnan(amount)),
                  min(amount), max(amount), count_if(amount = 0), count_if(ends_with(customer_id, ' ')),
                  count_if(has_offset), min(ts), max(ts), {row_hash_sum_sql(segment_columns)},
                  {id_quantiles_sql()}, {TS_BOUNDS_SQL}
           FROM typed_log"""
    ).fetchall()[0]  # fmt: skip
    clean = (
        rows > 0 and ids == rows and smallest_id >= "!" and timestamps == rows and amounts == rows and nans == 0
        and smallest_amount >= 0 and largest_amount < AMOUNT_LIMIT
    )  # fmt: skip
    if not clean:
        return count_each_problem(con)
    # No id starts with a space, so the spaced ids are those that end with one.
    return ProblemCounts(
        rows, 0, 0, 0, 0, zero_amounts, 0, with_offset, rows - with_offset, trailing_spaces, rows, first_ts, last_ts,
        int(hash_sum), quantiles, ts_bounds,
    )  # fmt: skip


def count_each_problem(con: duckdb.DuckDBPyConnection) -> ProblemCounts:
    """Count every problem of ``typed_log`` under its own filter (what ``count_problems`` proves for a clean log)."""
    counts = con.execute(
        f"""SELECT count(*),
                  count(*) FILTER (WHERE {NULL_ID_SQL}),
                  count(*) FILTER (WHERE {BAD_TS_SQL}),
                  count(*) FILTER (WHERE {BAD_AMOUNT_SQL}),
                  count(*) FILTER (WHERE {BAD_TS_SQL} OR {BAD_AMOUNT_SQL}),
                  count(*) FILTER (WHERE amount = 0),
                  count(*) FILTER (WHERE amount < 0),
                  count(*) FILTER (WHERE has_offset),
                  count(*) FILTER (WHERE NOT has_offset AND ts IS NOT NULL),
                  count(*) FILTER (WHERE {SPACED_ID_SQL}),
                  count(*) FILTER (WHERE {USED_SQL}),
                  min(ts) FILTER (WHERE {USED_SQL}),
                  max(ts) FILTER (WHERE {USED_SQL}),
                  {TS_BOUNDS_SQL}
           FROM typed_log"""
    ).fetchall()[0]
    *problems, ts_bounds = counts
    return ProblemCounts(*problems)._replace(ts_bounds=ts_bounds)


def find_far_dates(con: duckdb.DuckDBPyConnection, source: LogSource, counts: ProblemCounts) -> ProblemCounts:
    """Make the timestamps dated far outside the bulk of the log invalid; return the counts with them.

    The bulk of the log lies between the 0.1% and 99.9% quantiles of its valid timestamps (``BULK_QUANTILES``, from
    ``counts.ts_bounds``). A far date lies beyond them and is cut off from them by more than ``FAR_DATE_GAP_DAYS``
    without a single transaction (``_far_date_cuts``), such as one row of 2026 or of 1970 in a log of 2019-2021: a
    typing error or a placeholder that, taken as given, would move the default as_of years away or make a customer's
    recency meaningless. A log whose rows thin out slowly (customers arriving over years) has no such gap. Far
    dates count only while they are at most ``FAR_DATES_MAX_SHARE`` of the rows with a valid timestamp; more of
    them are a real part of the log. They are listed in ``far_dates(file, line)`` and their ``ts`` set to NULL in
    ``typed_log``, an invalid timestamp under ``data.invalid_rows``; the problems are then counted again
    (``count_each_problem``). The log is read again only when its first or last timestamp lies that far beyond the
    quantiles.
    """
    if counts.ts_bounds is None or counts.ts_bounds[0] is None:
        return counts
    first, low, high, _, last = counts.ts_bounds
    gap = dt.timedelta(days=FAR_DATE_GAP_DAYS)
    if first >= low - gap and last <= high + gap:
        return counts
    cut_low, cut_high = _far_date_cuts(con, low, high)
    sides = [] if cut_low is None else [f"ts <= TIMESTAMP '{cut_low}'"]
    sides += [] if cut_high is None else [f"ts >= TIMESTAMP '{cut_high}'"]
    if not sides:
        return counts
    far_sql = f"({' OR '.join(sides)})"
    con.execute(f"CREATE OR REPLACE TEMP TABLE far_dates AS SELECT {FILE_AND_LINE} FROM typed_log WHERE {far_sql}")
    far = _rows(con, "far_dates")
    if far > FAR_DATES_MAX_SHARE * (counts.rows - counts.bad_ts):
        con.execute("DROP TABLE far_dates")
        return counts
    _null_timestamps(con, source, far_sql)
    return count_each_problem(con)._replace(far_dates=far, bulk=(low, high))


def _far_date_cuts(
    con: duckdb.DuckDBPyConnection, low: dt.datetime, high: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The last timestamp before ``low`` and the first after ``high`` that a gap of more than ``FAR_DATE_GAP_DAYS``
    without transactions separates from them (None on a side without such a gap).

    Only the rows beyond the quantiles ``low`` and ``high`` (a few per thousand) are sorted, with the two
    quantiles themselves, to find the gaps between consecutive timestamps.
    """
    low_sql, high_sql = f"TIMESTAMP '{low}'", f"TIMESTAMP '{high}'"
    gap = f"INTERVAL {FAR_DATE_GAP_DAYS} DAY"
    row = con.execute(
        f"""WITH tails AS (
                SELECT ts FROM typed_log WHERE ts < {low_sql} OR ts > {high_sql}
                UNION ALL SELECT {low_sql} UNION ALL SELECT {high_sql}),
            steps AS (
                SELECT ts, lag(ts) OVER (ORDER BY ts) AS previous, lead(ts) OVER (ORDER BY ts) AS next FROM tails)
            SELECT max(ts) FILTER (WHERE ts < {low_sql} AND next > ts + {gap}),
                   min(ts) FILTER (WHERE ts > {high_sql} AND ts > previous + {gap})
            FROM steps"""
    ).fetchall()[0]
    return row[0], row[1]


def _null_timestamps(con: duckdb.DuckDBPyConnection, source: LogSource, condition: str) -> None:
    """Set ``ts`` to NULL, an invalid timestamp, in the rows of ``typed_log`` matching ``condition``."""
    if _typed_log_is_view(source):
        con.execute(
            f"""CREATE OR REPLACE TEMP VIEW typed_log AS
            SELECT * REPLACE (CASE WHEN NOT {condition} THEN ts END AS ts) FROM typed_rows"""
        )
    else:
        con.execute(f"UPDATE typed_log SET ts = NULL WHERE {condition}")


def find_duplicate_rows(con: duckdb.DuckDBPyConnection, raw_columns: list[str]) -> int:
    """Register ``duplicate_rows(file, line)``: the rows that repeat an earlier row exactly; return their count.

    The rows' 64-bit hashes are sorted first and a repeated hash is one equal to the hash before it, which takes
    far less time and memory than counting them in a hash table of every row; only when a hash repeats are the
    rows with it listed and compared column by column, in file and line order, so the first of equal rows is
    never listed.
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


def count_duplicate_order_ids(con: duckdb.DuckDBPyConnection) -> int:
    """Count the valid rows of ``typed_log`` whose order id an earlier valid row (in file and line order) has."""
    row = con.execute(
        f"""SELECT count(*) FROM (SELECT row_number() OVER (PARTITION BY order_id ORDER BY {FILE_AND_LINE})
            AS n FROM typed_log WHERE order_id IS NOT NULL AND {VALID_SQL}) WHERE n > 1"""
    ).fetchall()[0]
    return int(row[0])


class Duplicates(NamedTuple):
    """Rows that repeat an earlier row exactly (listed in ``duplicate_rows``), and rows that repeat an order id."""

    rows: int
    order_ids: int

    @property
    def found(self) -> bool:
        """Whether any row repeats an earlier row or order id."""
        return bool(self.rows or self.order_ids)


def _located(
    con: duckdb.DuckDBPyConnection, source: LogSource, condition: str, column: str, relation: str = "typed_log"
) -> str:
    """The first few rows of ``relation`` matching ``condition`` as ``line 3 '2023-02-30'``.

    With several files, each place names its file (``b.csv:3``) instead of the unit.
    """
    rows = con.execute(
        f"SELECT {FILE_AND_LINE}, {column} FROM {relation} WHERE {condition} ORDER BY {FILE_AND_LINE} LIMIT {EXAMPLES}"
    ).fetchall()
    places = [
        (f"{source.unit} {line}" if source.single_file else f"{Path(str(name)).name}:{line}") + f" {value!r}"
        for name, line, value in rows
    ]
    return "first at " + ", ".join(places)


# --- the policies -------------------------------------------------------------------------------------


def range_text(config: DataConfig) -> str:
    """``timestamp_range`` as the messages give it: ``1900-01-01 to 2026-12-08`` (both days included)."""
    first, after_last = timestamp_range(config)
    return f"{first.isoformat()} to {(after_last - dt.timedelta(days=1)).isoformat()}"


def _bad_ts_sql(counts: ProblemCounts) -> str:
    """SQL of the rows of ``typed_log`` whose timestamp is invalid in itself: not the far dates (``find_far_dates``)."""
    return f"{BAD_TS_SQL} AND NOT {FAR_DATE_SQL}" if counts.far_dates else BAD_TS_SQL


def _far_dates_text(config: DataConfig, counts: ProblemCounts) -> str:
    """The far dates (``find_far_dates``) as the messages describe them: which column, and how far from what."""
    bulk = "" if counts.bulk is None else f" ({counts.bulk[0]:%Y-%m-%d} to {counts.bulk[1]:%Y-%m-%d})"
    return (
        f"a '{config.timestamp}' far outside the bulk of the log{bulk}, the {BULK_QUANTILES[0]:.1%} to "
        f"{BULK_QUANTILES[1]:.1%} quantiles of its dates: cut off from them by more than {FAR_DATE_GAP_DAYS} days "
        "without any transaction, so probably a typing error (2026 for 2021) or a placeholder (1970-01-01) that "
        "would move as_of or a customer's recency by years"
    )


def _refuse_bad_values(
    con: duckdb.DuckDBPyConnection,
    config: DataConfig,
    source: LogSource,
    found: InvalidValues,
    relation: str = "typed_log",
    bad_ts_sql: str = BAD_TS_SQL,
) -> None:
    """Raise a DataError for the rows of ``relation`` with an invalid timestamp (``bad_ts_sql``) or amount, if any,
    quoting the first of them (``data.invalid_rows: fail``)."""
    rows, where = found.rows, source.where
    if found.bad_ts:
        hint = f"the format {config.timestamp_format!r}" if config.timestamp_format else "ISO dates (YYYY-MM-DD)"
        raise DataError(
            f"{found.bad_ts:,} of {rows:,} rows in {where} have a '{config.timestamp}' that is not a valid date or "
            f"time ({hint}; impossible dates such as 2023-02-30 count too) or falls outside {range_text(config)}; "
            f"{_located(con, source, bad_ts_sql, 'ts_raw', relation)}. Fix those rows, set data.timestamp_format, "
            "or set data.invalid_rows: drop to skip them."
        )
    if found.bad_amounts:
        raise DataError(
            f"{found.bad_amounts:,} of {rows:,} rows in {where} have an amount ({amount_name(config)}) that is not a "
            "finite number (empty, text, NaN or infinite) or is 1e29 or more in size (amounts are summed exactly "
            f"with 29 digits before the point); {_located(con, source, BAD_AMOUNT_SQL, 'amount_raw', relation)}. "
            "Fix or remove those rows, or set data.invalid_rows: drop to skip them."
        )


def refuse_invalid_rows(
    con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource, counts: ProblemCounts
) -> None:
    """Apply ``data.invalid_rows: fail``: raise a DataError for a log without rows or with invalid ones.

    The invalid timestamps and amounts were refused before the typed log was made (``refuse_invalid_values``);
    the far dates, found in it (``find_far_dates``), are refused here. Under ``drop`` the invalid rows are left out
    of ``kept_log`` instead (``register_kept_log``).
    """
    rows, where = counts.rows, source.where
    if rows == 0:
        found = ", ".join(source.column_types)
        raise DataError(
            f"{where} has no transactions (no rows after the header; columns {found}). "
            "Point data.path at a non-empty log."
        )
    if config.invalid_rows == "drop":
        _refuse_too_many_invalid(con, config, source, counts)
        return
    bad_values = InvalidValues(rows, counts.bad_ts - counts.far_dates, counts.bad_amounts)
    _refuse_bad_values(con, config, source, bad_values, bad_ts_sql=_bad_ts_sql(counts))
    if counts.far_dates:
        raise DataError(
            f"{counts.far_dates:,} of {rows:,} rows in {where} have {_far_dates_text(config, counts)}; "
            f"{_located(con, source, FAR_DATE_SQL, 'ts_raw')}. Fix those rows, or set data.invalid_rows: drop to "
            "skip them."
        )


def _refuse_too_many_invalid(
    con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource, counts: ProblemCounts
) -> None:
    """Under ``data.invalid_rows: drop``, raise a DataError when more than ``invalid_rows_max_share`` are invalid.

    Dropping a few broken rows is housekeeping; dropping a large share (day and month swapped, a wrong column)
    would quietly forecast from a fraction of the log.
    """
    share = counts.invalid / counts.rows
    if share <= config.invalid_rows_max_share:
        return
    where = []
    if counts.bad_ts > counts.far_dates:
        located = _located(con, source, _bad_ts_sql(counts), "ts_raw")
        where.append(f"{counts.bad_ts - counts.far_dates:,} with an invalid '{config.timestamp}' ({located})")
    if counts.far_dates:
        located = _located(con, source, FAR_DATE_SQL, "ts_raw")
        where.append(f"{counts.far_dates:,} with a '{config.timestamp}' far outside the bulk of the log ({located})")
    if counts.bad_amounts:
        where.append(
            f"{counts.bad_amounts:,} with an invalid amount ({_located(con, source, BAD_AMOUNT_SQL, 'amount_raw')})"
        )
    raise DataError(
        f"{counts.invalid:,} of {counts.rows:,} rows in {source.where} ({share:.1%}) are invalid, more than "
        f"data.invalid_rows_max_share {config.invalid_rows_max_share:.1%} allows dropping: {'; '.join(where)}. "
        "Check data.timestamp_format and the amount column; raise data.invalid_rows_max_share only if these rows "
        "are really unusable."
    )


def refuse_negative_amounts(
    con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource, counts: ProblemCounts
) -> None:
    """Apply ``data.negative_amounts: fail``: raise a DataError for a log with returns.

    Under ``net`` or ``drop`` the returns are handled by ``register_transactions``.
    """
    if counts.negative_amounts and config.negative_amounts == "fail":
        raise DataError(
            f"{counts.negative_amounts:,} rows in {source.where} have a negative amount ({amount_name(config)}; "
            "returns); "
            f"{_located(con, source, 'amount < 0', 'amount_raw')}. "
            "Set data.negative_amounts to 'net' or 'drop', or remove them."
        )


def refuse_duplicates(
    con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource, duplicates: Duplicates
) -> None:
    """Apply ``data.duplicates: fail``: raise a DataError for a log with repeated rows or order ids.

    Under ``drop`` the repeats are left out of ``kept_log`` (``register_kept_log``); under ``keep`` they stay.
    """
    if not duplicates.found or config.duplicates != "fail":
        return
    what = []
    if duplicates.rows:
        what.append(
            f"{duplicates.rows:,} rows repeat an earlier row exactly "
            f"({_located(con, source, DUPLICATE_ROW_SQL, 'customer_id')})"
        )
    if duplicates.order_ids:
        what.append(f"{duplicates.order_ids:,} rows repeat an earlier '{config.order_id}' (data.order_id)")
    raise DataError(
        f"{source.where}: {'; '.join(what)}. Remove the duplicates, or set data.duplicates to 'drop' (keep the "
        "first) or 'keep' (count them as separate purchases)."
    )


def register_kept_log(
    con: duckdb.DuckDBPyConnection, config: DataConfig, counts: ProblemCounts, duplicates: Duplicates
) -> None:
    """Register ``kept_log``: the rows of ``typed_log`` that survive the policies, before returns are netted.

    Rows with an empty id and (under ``data.invalid_rows: drop``) invalid rows are left out, and under
    ``data.duplicates: drop`` every exact repeat and every repeat of an order id but the first.
    """
    # Every later read of the log filters it again, so a filter that the counts show removes nothing is left out.
    keep = [VALID_SQL] if counts.null_ids or counts.bad_ts or counts.bad_amounts else ["true"]
    if config.exclude_customers:
        keep.append(f"customer_id NOT IN ({', '.join(quote_literal(i) for i in config.exclude_customers)})")
    if config.duplicates == "drop" and duplicates.rows:
        keep.append(f"NOT {DUPLICATE_ROW_SQL}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW kept_log AS SELECT * FROM typed_log WHERE {' AND '.join(keep)}")
    if config.duplicates == "drop" and config.order_id is not None:
        con.execute(
            f"""CREATE OR REPLACE TEMP VIEW kept_log AS SELECT * EXCLUDE (__clv_order_n) FROM (
                SELECT *, row_number() OVER (PARTITION BY order_id ORDER BY {FILE_AND_LINE}) AS __clv_order_n
                FROM typed_log WHERE {" AND ".join(keep)})
                WHERE order_id IS NULL OR __clv_order_n = 1"""
        )


def excluded_customers_warning(con: duckdb.DuckDBPyConnection, config: DataConfig) -> list[str]:
    """Say how many rows ``data.exclude_customers`` left out, and which listed ids the log does not hold."""
    if not config.exclude_customers:
        return []
    listed = ", ".join(quote_literal(i) for i in config.exclude_customers)
    found = dict(
        con.execute(
            f"SELECT customer_id, count(*) FROM typed_log WHERE customer_id IN ({listed}) GROUP BY customer_id"
        ).fetchall()
    )
    message = (
        f"{sum(found.values()):,} rows of {len(found):,} customer(s) listed in data.exclude_customers were left out."
    )
    absent = [i for i in config.exclude_customers if i not in found]
    if absent:
        message += f" Not in the log: {', '.join(repr(i) for i in absent[:5])}{' ...' if len(absent) > 5 else ''}."
    return [message]


class Netting(NamedTuple):
    """What ``data.negative_amounts: net`` could not do: returns without a purchase to net into (dropped), and
    purchase days that the returns netted into them took below zero (set to zero)."""

    unmatched: int = 0
    over_purchase_days: int = 0

    def messages(self, config: DataConfig) -> list[str]:
        """One warning per thing netting could not do, with its count (both engines)."""
        messages = []
        if self.unmatched:
            within = "of the same order or " if config.order_id is not None else ""
            messages.append(
                f"{self.unmatched:,} returns had no purchase {within}by the same customer on or up to "
                f"{config.return_window_days} days before them (data.return_window_days) and were dropped (a return "
                "is not a purchase)."
            )
        if self.over_purchase_days:
            messages.append(
                f"{self.over_purchase_days:,} purchase days received returns larger than their purchases; they were "
                "netted to 0 (still a purchase), and the excess was dropped."
            )
        return messages


def register_transactions(con: duckdb.DuckDBPyConnection, config: DataConfig, counts: ProblemCounts) -> Netting:
    """Register ``transactions`` from ``kept_log`` under ``data.negative_amounts``; return what netting left.

    Under ``net`` each return is netted into a purchase day (``_net_returns``), under ``drop`` every return is
    left out.
    """
    if config.negative_amounts == "net" and counts.negative_amounts:
        return _net_returns(con, config)
    segment_names = "".join(f", {quote_identifier(c)}" for c in config.segment_columns)
    keep_negative = "" if config.negative_amounts == "net" else " WHERE amount >= 0"
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW transactions AS
        SELECT customer_id, ts, amount{segment_names} FROM kept_log{keep_negative}"""
    )
    return Netting()


def _return_days_sql(config: DataConfig) -> str:
    """SQL of every return of ``kept_log`` with the purchase day it is netted into (NULL when there is none).

    That day is the day of the same order's last purchase when ``data.order_id`` is mapped and the order has
    one; otherwise the customer's most recent purchase day on or before the return's day, if it is at most
    ``data.return_window_days`` before it. Refunds often come days after the purchase, and by order or by
    customer is how the shop's own books match them.
    """
    by_order = (
        """LEFT JOIN (SELECT customer_id, order_id, max(day) AS order_day FROM purchase_days_by_order GROUP BY ALL)
               USING (customer_id, order_id)"""
        if config.order_id is not None
        else "LEFT JOIN (SELECT NULL::DATE AS order_day) ON true"
    )
    return f"""
        WITH purchase_days_by_order AS (
            SELECT DISTINCT customer_id, order_id, CAST(ts AS DATE) AS day FROM kept_log WHERE amount >= 0),
        purchase_days AS (SELECT DISTINCT customer_id, day FROM purchase_days_by_order),
        returns AS (
            SELECT customer_id, order_id, CAST(ts AS DATE) AS return_day, amount FROM kept_log WHERE amount < 0),
        by_time AS (
            SELECT r.*, p.day AS recent_day FROM returns r
            ASOF LEFT JOIN purchase_days p ON r.customer_id = p.customer_id AND r.return_day >= p.day)
        SELECT customer_id, amount,
               coalesce(order_day, CASE WHEN return_day - recent_day <= {config.return_window_days}
                                        THEN recent_day END) AS day
        FROM by_time {by_order}"""


def _net_returns(con: duckdb.DuckDBPyConnection, config: DataConfig) -> Netting:
    """Register ``transactions`` with each return netted into a purchase day (``_return_days_sql``).

    The returns of a day are added to the customer's last purchase of that day, so a return never creates a
    purchase of its own, at day or exact resolution; a day whose returns exceed its purchases is netted to zero
    (it stays a purchase). Returns without a purchase day are dropped. Both are counted.
    """
    file_col, line_col = quote_identifier(FILE_COLUMN), quote_identifier(LINE_COLUMN)
    # The returns are few: their days are found once, not in every read of the view.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE returned_by_day AS
        SELECT customer_id, day, sum(amount) AS returned, count(*) AS returns
        FROM ({_return_days_sql(config)}) GROUP BY ALL"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW transactions AS
        WITH purchases AS (
            SELECT *, CAST(ts AS DATE) AS day,
                   sum(amount) OVER (PARTITION BY customer_id, CAST(ts AS DATE)) AS day_total,
                   row_number() OVER (PARTITION BY customer_id, CAST(ts AS DATE)
                                      ORDER BY ts DESC, {file_col} DESC, {line_col} DESC) AS last_of_day
            FROM kept_log WHERE amount >= 0)
        SELECT p.customer_id, p.ts,
               p.amount + CASE WHEN p.last_of_day = 1 THEN greatest(coalesce(r.returned, 0.0), -p.day_total)
                               ELSE 0.0 END AS amount
               {"".join(", p." + quote_identifier(c) for c in config.segment_columns)}
        FROM purchases p LEFT JOIN returned_by_day r ON r.customer_id = p.customer_id AND r.day = p.day"""
    )
    unmatched, over = con.execute(
        """SELECT coalesce(sum(returns) FILTER (WHERE day IS NULL), 0),
                  count(*) FILTER (WHERE day IS NOT NULL AND returned < -(
                      SELECT sum(amount) FROM kept_log k
                      WHERE k.customer_id = r.customer_id AND CAST(k.ts AS DATE) = r.day AND k.amount >= 0))
           FROM returned_by_day r"""
    ).fetchall()[0]
    return Netting(int(unmatched), int(over))


# --- what the filters and the text ids did ----------------------------------------------------------


def count_excluded(con: duckdb.DuckDBPyConnection, config: DataConfig) -> tuple[dict[str, int], int]:
    """How many rows of ``raw_log`` each ``data.exclude`` filter matches (a row may match several), and how many
    rows they leave out together, in one pass."""
    if not config.exclude:
        return {}, 0
    *counts, total = con.execute(
        f"""SELECT {", ".join(f"count_if({_filter_sql(f)})" for f in config.exclude)},
                   count_if({excluded_sql(config)}) FROM raw_log"""
    ).fetchall()[0]
    return {f.describe(): int(n) for f, n in zip(config.exclude, counts, strict=True)}, int(total)


def empty_ids_message(rows: int) -> str:
    """The warning when rows without a customer id were dropped (both engines)."""
    return f"{rows:,} rows with an empty customer id were dropped."


def zero_amounts_message(rows: int) -> str:
    """The warning when rows have an amount of 0 (both engines)."""
    return f"{rows:,} rows have an amount of 0; they count as purchases."


def negative_amounts_message(config: DataConfig, rows: int) -> str:
    """The warning when returns were dropped or netted under ``data.negative_amounts`` (both engines)."""
    action = "dropped" if config.negative_amounts == "drop" else "netted into the purchases they refund"
    return f"{rows:,} rows have a negative amount (returns); they were {action}."


def float_text_ids_message(config: DataConfig, rows: int) -> str:
    """The warning when ids written as whole floats ('13085.0') were read as integers (both engines)."""
    return (
        f"{rows:,} rows have their '{config.customer_id}' (data.customer_id) written as a whole floating-point number "
        "('13085.0'); as every id is a whole number, they were read as integers ('13085'). Export the ids as "
        "integers or text to be sure none was rounded."
    )


def float_ids_message(config: DataConfig) -> str:
    """The warning when ids stored as floating-point numbers were read as integers (both engines)."""
    return (
        f"'{config.customer_id}' (data.customer_id) is stored as floating-point numbers; they are all whole and were "
        "read as integers (42.0 as '42'). Export the ids as integers or text to be sure none is rounded."
    )


#: A customer id that a spreadsheet or pandas wrote as a whole floating-point number: '13085.0'.
WHOLE_FLOAT_TEXT = r"-?[0-9]+(\.0+)?"


def read_whole_float_text_ids(con: duckdb.DuckDBPyConnection, source: LogSource) -> int:
    """Rewrite ids such as '13085.0' to '13085' in a text log's ``typed_log`` when every id looks like that.

    A CSV export of a numeric column with blanks (pandas makes it float) writes '13085.0', while the shop's own
    systems say '13085'. Only when every non-empty id is a whole number, and some are written with '.0', are the
    decimals dropped; any other id keeps the text exactly as given. Returns the ids rewritten.
    """
    if source.file_format == "parquet":  # typed: floating-point Parquet ids are read as integers already
        return 0
    if not con.execute("SELECT 1 FROM typed_log WHERE contains(customer_id, '.') LIMIT 1").fetchall():
        return 0
    row = con.execute(
        f"""SELECT bool_and(regexp_full_match(customer_id, '{WHOLE_FLOAT_TEXT}'))
            FROM typed_log WHERE NOT {NULL_ID_SQL}"""
    ).fetchall()[0]
    if not row[0]:
        return 0
    changed = con.execute(
        "UPDATE typed_log SET customer_id = split_part(customer_id, '.', 1) WHERE contains(customer_id, '.')"
    ).fetchall()[0]
    return int(changed[0])


class Found(NamedTuple):
    """Everything a read found and did, for its warnings and its data-quality record."""

    counts: ProblemCounts
    duplicates: Duplicates
    excluded: dict[str, int]
    excluded_rows: int
    float_text_ids: int
    netting: Netting


# --- the data-quality record --------------------------------------------------------------------------


def quality_warnings(con: duckdb.DuckDBPyConnection, config: DataConfig, source: LogSource, found: Found) -> list[str]:
    """One message per problem found, saying how many rows, what the policy did and where the first ones are.

    One piece though long: a flat sequence of independent checks, one per kind of problem, in the order the user
    reads them (``forecast validate`` prints the list as it is); each message is the only place its wording lives.
    """
    counts, duplicates, netting = found.counts, found.duplicates, found.netting
    warnings = []
    if found.excluded_rows:
        each = "; ".join(f"{rows:,} where {name}" for name, rows in found.excluded.items())
        warnings.append(f"{found.excluded_rows:,} rows were left out by data.exclude ({each}).")
    if found.float_text_ids:
        warnings.append(float_text_ids_message(config, found.float_text_ids))
    if source.empty_files:
        names = ", ".join(p.name for p in source.empty_files[:EXAMPLES])
        warnings.append(f"{len(source.empty_files)} empty file(s) were skipped: {names}.")
    if source.hidden_files:
        names = ", ".join(p.name for p in source.hidden_files[:EXAMPLES])
        warnings.append(
            f"{len(source.hidden_files)} hidden file(s) (names starting with '.', such as macOS's ._ and .DS_Store "
            f"files) were skipped: {names}."
        )
    if _float_ids(config, source):
        warnings.append(float_ids_message(config))
    if counts.bad_ts > counts.far_dates:
        warnings.append(
            f"{counts.bad_ts - counts.far_dates:,} rows with an invalid '{config.timestamp}' were dropped "
            f"(data.invalid_rows: drop; valid dates run from {range_text(config)}); "
            f"{_located(con, source, _bad_ts_sql(counts), 'ts_raw')}."
        )
    if counts.far_dates:
        warnings.append(
            f"{counts.far_dates:,} rows were dropped (data.invalid_rows: drop) as they have "
            f"{_far_dates_text(config, counts)}; {_located(con, source, FAR_DATE_SQL, 'ts_raw')}."
        )
    if counts.bad_amounts:
        warnings.append(
            f"{counts.bad_amounts:,} rows with a non-numeric or non-finite (or 1e29 or more in size) "
            f"{amount_name(config)} were dropped "
            f"(data.invalid_rows: drop); {_located(con, source, BAD_AMOUNT_SQL, 'amount_raw')}."
        )
    if counts.null_ids:
        warnings.append(empty_ids_message(counts.null_ids))
    if counts.spaced_ids:
        warnings.append(
            f"{counts.spaced_ids:,} rows have a customer id with leading or trailing spaces; ids are kept as given, "
            "so ' 7' and '7' are different customers."
        )
    if counts.with_offset and counts.without_offset:
        warnings.append(
            f"{counts.with_offset:,} timestamps carry a UTC offset and {counts.without_offset:,} do not: offsets "
            f"were converted to {config.timezone} and the others taken as {config.timezone} (data.timezone)."
        )
    if counts.zero_amounts:
        warnings.append(zero_amounts_message(counts.zero_amounts))
    if counts.negative_amounts:
        warnings.append(negative_amounts_message(config, counts.negative_amounts))
    warnings.extend(netting.messages(config))
    if duplicates.found:
        action = {"keep": "kept as separate purchases", "drop": "dropped (the first was kept)"}[config.duplicates]
        parts = [f"{duplicates.rows:,} rows repeat an earlier row exactly"] if duplicates.rows else []
        if duplicates.order_ids:
            parts.append(f"{duplicates.order_ids:,} rows repeat an earlier order id")
        warnings.append(f"{' and '.join(parts)}; they were {action} (data.duplicates: {config.duplicates}).")
    return warnings


def data_quality(
    config: DataConfig, source: LogSource, found: Found, rows_used: int, warnings: list[str]
) -> DataQuality:
    """The data-quality record of a read: what was found, with the policy applied to each problem."""
    counts, duplicates = found.counts, found.duplicates
    return DataQuality(
        rows=counts.rows + found.excluded_rows,
        customers=None,
        first_timestamp=None if counts.first_ts is None else str(counts.first_ts),
        last_timestamp=None if counts.last_ts is None else str(counts.last_ts),
        null_customer_ids=counts.null_ids,
        zero_amounts=counts.zero_amounts,
        negative_amounts=counts.negative_amounts,
        negative_policy=config.negative_amounts,
        warnings=warnings,
        rows_used=rows_used,
        files=len(source.files),
        empty_files=[str(p) for p in source.empty_files],
        invalid_timestamps=counts.bad_ts,
        invalid_amounts=counts.bad_amounts,
        invalid_rows=counts.invalid,
        far_dates=counts.far_dates,
        invalid_policy=config.invalid_rows,
        timezone=config.timezone,
        timestamps_with_offset=counts.with_offset,
        timestamps_without_offset=counts.without_offset,
        ids_with_surrounding_space=counts.spaced_ids,
        returns_without_purchase=found.netting.unmatched,
        returns_over_purchase=found.netting.over_purchase_days,
        excluded_rows=found.excluded_rows,
        excluded_by_filter=found.excluded,
        float_text_ids=found.float_text_ids,
        duplicate_rows=duplicates.rows,
        duplicate_order_ids=duplicates.order_ids,
        duplicates_policy=config.duplicates,
    )


# --- reading a log ------------------------------------------------------------------------------------


def read_transactions(
    config: DataConfig, connection: duckdb.DuckDBPyConnection | None = None, frame: pd.DataFrame | None = None
) -> Transactions:
    """Open the configured log, check it, apply the data policies and register ``transactions``.

    Parameters
    ----------
    config
        The ``data`` section of the run configuration.
    connection
        DuckDB connection to register the relation in; a new in-memory one by default.
    frame
        The log as a pandas DataFrame, read instead of ``config.path`` (which then only names it).

    Returns
    -------
    Transactions
        The connection holding ``transactions(customer_id, ts, amount, <segment columns>)``
        and a data-quality summary.

    Raises
    ------
    DataError
        Missing columns, an empty log, unparseable or far timestamps or amounts (under ``invalid_rows: fail``),
        negative amounts (under ``negative_amounts: fail``) or duplicates (under ``duplicates: fail``).
    """
    started = time.perf_counter()
    identities = file_identities(resolve_files(config.path)) if frame is None else ()
    con = connection if connection is not None else duckdb.connect()
    source = open_log(con, config, identities) if frame is None else open_frame(con, config, frame)
    register_typed_rows(con, config, source)
    refuse_invalid_values(con, config, source)
    create_typed_log(con, source)
    with _unreadable_as_data_error(source.where, READ_ADVICE, identities):
        excluded, excluded_rows = count_excluded(con, config)
        float_text_ids = read_whole_float_text_ids(con, source)
        counts = find_far_dates(con, source, count_problems(con, list(config.segment_columns)))
        duplicate_rows = find_duplicate_rows(con, list(source.column_types))
    refuse_excluded_everything(source, counts, excluded_rows)
    refuse_invalid_rows(con, config, source, counts)
    refuse_negative_amounts(con, config, source, counts)
    order_ids = count_duplicate_order_ids(con) if config.order_id is not None else 0
    duplicates = Duplicates(duplicate_rows, order_ids)
    refuse_duplicates(con, config, source, duplicates)

    register_kept_log(con, config, counts, duplicates)
    netting = register_transactions(con, config, counts)
    rows_used = counts.rows_used
    if (config.duplicates == "drop" and duplicates.found) or config.exclude_customers:
        rows_used = _rows(con, "transactions")

    found = Found(counts, duplicates, excluded, excluded_rows, float_text_ids, netting)
    warnings = quality_warnings(con, config, source, found)
    warnings.extend(excluded_customers_warning(con, config))
    if rows_used == 0:
        raise DataError(
            f"No usable transactions are left in {source.where} after applying the data policies ({counts.rows:,} "
            f"rows read; {'; '.join(warnings)}). Fix the log or the data section of the config."
        )
    quality = data_quality(config, source, found, rows_used, warnings)
    return Transactions(
        connection=con, files=source.files, segment_columns=list(config.segment_columns), quality=quality,
        read_seconds=time.perf_counter() - started,
        # A clean log whose every row is used is ``transactions`` row for row.
        row_hash_sum=counts.row_hash_sum if rows_used == counts.rows else None, id_quantiles=counts.id_quantiles,
        identities=identities, last_but_one_timestamp=_last_but_one(counts),
    )  # fmt: skip


def _last_but_one(counts: ProblemCounts) -> str | None:
    """``Transactions.last_but_one_timestamp``: the last valid timestamp but one, as text (None without one)."""
    bounds = counts.ts_bounds
    return None if bounds is None or bounds[3] is None else str(bounds[3])


def _rows(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0])


def refuse_excluded_everything(source: LogSource, counts: ProblemCounts, excluded_rows: int) -> None:
    """Raise a DataError when ``data.exclude`` left no row of a log that had some."""
    if counts.rows == 0 and excluded_rows:
        raise DataError(
            f"data.exclude left out every one of the {excluded_rows:,} rows of {source.where}. Check the filters' "
            "columns and values (compared as text, case-sensitive)."
        )


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
            f"{str(exc).splitlines()[0].rstrip('.')}. Set duckdb.memory_limit to what this job may really use: "
            "higher if the machine has memory to spare, lower than a process or container limit (a 'bad "
            "allocation' means the system refused memory below DuckDB's own limit), so that DuckDB spills; and "
            "set duckdb.temp_directory to a folder with free space for the spill. Nothing was written."
        ) from None


def read_log(config: RunConfig) -> Transactions:
    """``read_transactions`` of a run config's log, in a DuckDB connection with the config's settings."""
    con = connect_duckdb(config.duckdb)
    try:
        with duckdb_limits(config.duckdb, f"reading and checking {config.data.path}"):
            return read_transactions(config.data, con)
    except BaseException:
        con.close()  # DuckDB removes its spill files when the connection closes
        raise


# --- after the read: counts that need as_of -------------------------------------------------------------


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

    Counting distinct ids takes a pass over the log, so when no usable row is after as_of (``count_after_as_of``
    ran and found none) the count of the customers summarised up to as_of, ``customers_up_to_as_of``, is the
    answer and is taken instead.
    """
    quality = transactions.quality
    if customers_up_to_as_of is not None and quality.as_of is not None and quality.after_as_of == 0:
        customers = customers_up_to_as_of
    else:
        row = transactions.connection.execute("SELECT count(DISTINCT customer_id) FROM transactions").fetchone()
        customers = int(row[0]) if row else 0
    return dataclasses.replace(transactions, quality=dataclasses.replace(quality, customers=customers))
