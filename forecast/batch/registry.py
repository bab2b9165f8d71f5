"""The run registry: as_of dates, the runs-root layout, input fingerprints and reading finished runs back.

Layout (docs-batch.md)::

    <output>/<as_of YYYY-MM-DD>/        one folder per run: customers.csv/.parquet, segments.csv,
                                        manifest.json (written last), run.log, models/*.json
    <models_dir>/<as_of YYYY-MM-DD>/    the published copy of the run's fitted models

A folder is a finished run when it holds ``manifest.json``; folders whose name starts with a dot
(``.<name>.partial-<pid>``, staging of a run in progress or killed) are never read as runs.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from forecast.data.ingest import row_hash_sum_sql
from forecast.errors import ArtifactError, ConfigError, OutputError

# pandas (0.25-0.45 s to import) is imported where it is used: `forecast run` imports this module before it reads
# the log, and imports pandas on a second thread while it reads (forecast.cli).
if TYPE_CHECKING:
    import pandas as pd

    from forecast.data.ingest import Transactions
    from forecast.models import GammaGamma, PurchaseModel

MANIFEST = "manifest.json"
RUN_MODELS = "models"
MODEL_FILES = {"purchases": "purchases.json", "spend": "spend.json"}
#: Everything a run folder may hold: the only entries ``--force`` may replace.
RUN_ENTRIES = frozenset({
    MANIFEST, RUN_MODELS, "customers.parquet", "customers.csv", "segments.csv", "report.html", "run.log",
    "backtest.json", "backtest_customers.csv", "backtest_conditional_expectation.svg", "backtest_tracking.svg",
    "backtest_deciles.svg",
})  # fmt: skip
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def month_end(day: dt.date) -> dt.date:
    """The last day of the calendar month of ``day``."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def parse_as_of(text: str) -> dt.date:
    """Read an as_of given as ``YYYY-MM`` (that month's last day) or ``YYYY-MM-DD``.

    Raises
    ------
    ConfigError
        Neither form, or not a calendar date.
    """
    text = text.strip()
    try:
        if _MONTH.match(text):
            return month_end(dt.date.fromisoformat(text + "-01"))
        if _DAY.match(text):
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise ConfigError(f"'{text}' is not a date: give --as-of / --through as YYYY-MM (month end) or YYYY-MM-DD.")


def last_complete_month_end(last_timestamp: str | dt.date | dt.datetime) -> dt.date:
    """The end of the last calendar month that the data covers completely.

    A log whose last transaction falls on a month's last day covers that month; otherwise the
    month before is the last complete one.
    """
    import pandas as pd

    last = pd.Timestamp(last_timestamp).date()
    if last == month_end(last):
        return last
    return last.replace(day=1) - dt.timedelta(days=1)


def month_ends_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Month ends from the month of ``first`` through the month of ``last``, in order (a backfill).

    Raises
    ------
    ConfigError
        ``last`` is in an earlier month than ``first``.
    """
    if (last.year, last.month) < (first.year, first.month):
        raise ConfigError(f"--through {last} is before --as-of {first}. Give the earlier month first.")
    ends = []
    current = month_end(first)
    while current <= month_end(last):
        ends.append(current)
        current = month_end(current + dt.timedelta(days=1))
    return ends


def run_folder(runs_root: str | Path, as_of: dt.date) -> Path:
    """The folder of the run as of a date inside a runs root: ``<runs_root>/<YYYY-MM-DD>``."""
    return Path(runs_root) / as_of.isoformat()


def fingerprint_method() -> str:
    """The name of the row-hash method, with the DuckDB version whose ``hash()`` it uses."""
    return "duckdb-hash-" + ".".join(duckdb.__version__.split(".")[:2])


def input_fingerprint(transactions: Transactions, as_of: dt.date) -> dict[str, Any]:
    """Identify the transactions a run as of a date uses, independently of row order and of later rows.

    Each row (customer_id, ts, amount, segment columns) is hashed to 64 bits with DuckDB's ``hash()`` and
    the hashes are summed exactly (128-bit integers; ``ingest.row_hash_sum_sql``), so appending next month's rows
    or reordering the file does not change the fingerprint of an earlier as_of, while any edit to a row up to
    as_of does (but for a 2**-64 chance). It tells a re-run of the same data from a run of changed data; it is
    no protection against deliberately forged files. ``hash()`` is fast (0.3 s for 10 million rows, MD5 3.5 s)
    but may change between DuckDB versions, so the method names the version (``fingerprint_method``). When
    no row is after as_of (``count_after_as_of``) and the read's checks summed every row
    (``Transactions.row_hash_sum``), that sum is taken instead of a pass over the log.

    Returns
    -------
    dict
        ``rows_up_to_as_of``, ``as_of_sha256`` (SHA-256 of the method, row count and hash sum) and
        ``fingerprint_method``.
    """
    if transactions.row_hash_sum is not None and transactions.ends_by(as_of):
        rows, total = transactions.quality.rows, transactions.row_hash_sum  # every row is used
    else:
        end = (as_of + dt.timedelta(days=1)).isoformat()
        counts = transactions.connection.execute(
            f"""SELECT count(*), {row_hash_sum_sql(transactions.segment_columns)}
                FROM transactions WHERE ts < DATE '{end}'"""
        ).fetchone()
        assert counts is not None
        rows, total = counts
    method = fingerprint_method()
    text = f"method={method};rows={rows};sum={total}"
    return {
        "rows_up_to_as_of": int(rows),
        "as_of_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "fingerprint_method": method,
    }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a finished run folder, or None when the folder holds no readable manifest."""
    try:
        document = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def check_overwrite(
    target: Path, as_of: dt.date, fingerprint: dict[str, Any], force: bool, keep: tuple[Path, ...] = ()
) -> None:
    """Refuse to replace an existing folder unless it is a run of the same input, or a run and ``force`` is set.

    ``force`` replaces a run as of another date or of other data, never a folder this tool did not write: one
    without a manifest, one holding anything but a run's files (``RUN_ENTRIES``), or one holding ``keep`` (the
    config file and the input).

    Raises
    ------
    OutputError
        ``target`` is not a run folder, holds a path of ``keep``, or (without ``force``) is a run as of another date
        or made from other data (different ``as_of_sha256``).
    """
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"The output {target} exists and is not a folder. Choose another --output.")
    inside = [path for path in keep if path.resolve().is_relative_to(target.resolve())]
    if inside:
        raise OutputError(
            f"The output folder {target} holds {inside[0]}, the run's own config or input; replacing the folder "
            "would delete it. Choose another --output (the default is <config output>/<as_of>/)."
        )
    foreign = sorted(entry.name for entry in target.iterdir() if entry.name not in RUN_ENTRIES)
    previous = read_manifest(target)
    if foreign or (previous is None and any(target.iterdir())):
        names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5:,} more" if len(foreign) > 5 else "")
        held = f"holds files a run does not write ({names})" if foreign else f"holds no {MANIFEST}"
        raise OutputError(
            f"The output folder {target} {held}, so it is not a forecast run; replacing it would delete them, and "
            "--force never does. Choose another --output, or an empty or new folder."
        )
    if previous is None or force:
        return
    before = previous.get("input", {})
    if previous.get("as_of") != as_of.isoformat():
        raise OutputError(
            f"{target} holds the run as of {previous.get('as_of')}, not {as_of}. Leave out --output to write to "
            f"<config output>/{as_of}/, choose another --output, or pass --force to replace it."
        )
    if before.get("fingerprint_method") != fingerprint["fingerprint_method"]:
        raise OutputError(
            f"{target} holds a run whose input was fingerprinted by another method "
            f"({before.get('fingerprint_method', 'MD5, before clv-forecast used DuckDB hashes')}; now "
            f"{fingerprint['fingerprint_method']}), so whether it was made from the same data cannot be told. "
            "Pass --force to replace it, or write to another --output."
        )
    if before.get("as_of_sha256") != fingerprint["as_of_sha256"]:
        raise OutputError(
            f"{target} holds a run made from different input: {before.get('rows_up_to_as_of', '?')} rows up to "
            f"as_of {previous.get('as_of')} with fingerprint {str(before.get('as_of_sha256'))[:12]}..., now "
            f"{fingerprint['rows_up_to_as_of']} rows with {fingerprint['as_of_sha256'][:12]}.... The data up to "
            "as_of changed since that run. Pass --force to replace it, or write to another --output."
        )


def check_runs_apart_from_models(runs: Path, models_dir: Path) -> None:
    """Refuse a runs root (or run folder) that is, holds or lies inside the models folder.

    Publishing the models would otherwise replace the run just committed, or the run the published models.

    Raises
    ------
    ConfigError
        The two folders are the same, or one is inside the other.
    """
    runs, models_dir = runs.resolve(), models_dir.resolve()
    if runs.is_relative_to(models_dir) or models_dir.is_relative_to(runs):
        raise ConfigError(
            f"The run output {runs} and models_dir {models_dir} are the same folder or one is inside the other, so "
            "publishing the models would overwrite the run (or the run the models). Give output (or --output) and "
            "models_dir separate folders, e.g. output: runs/shop and models_dir: models."
        )


def find_previous_run(runs_root: Path, as_of: dt.date, exclude: Path | None = None) -> Path | None:
    """The finished run with the latest as_of before ``as_of`` in a runs root, or None.

    Only folders named ``YYYY-MM-DD`` with a readable manifest count (staging folders are hidden).
    """
    if not runs_root.is_dir():
        return None
    candidates = []
    for folder in runs_root.iterdir():
        if not folder.is_dir() or not _DAY.match(folder.name) or (exclude and folder.resolve() == exclude.resolve()):
            continue
        manifest = read_manifest(folder)
        if manifest is None:
            continue
        try:
            folder_as_of = dt.date.fromisoformat(str(manifest.get("as_of")))
        except ValueError:
            continue
        if folder_as_of < as_of:
            candidates.append((folder_as_of, folder))
    return max(candidates)[1] if candidates else None


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredRun:
    """A finished run read back from its folder."""

    path: Path
    manifest: dict[str, Any]
    customers: pd.DataFrame
    segments: pd.DataFrame
    purchases: PurchaseModel
    spend: GammaGamma

    @property
    def as_of(self) -> dt.date:
        return dt.date.fromisoformat(self.manifest["as_of"])


def load_run(run_dir: str | Path) -> StoredRun:
    """Read a finished run: manifest, per-customer and per-segment tables, and its fitted models.

    The models are read from the run folder's own ``models/`` copy, and their SHA-256 must match the
    manifest, so tables and models always belong to the same run.

    Returns
    -------
    StoredRun
        ``customers`` indexed by customer_id (string).

    Raises
    ------
    ArtifactError
        The folder is not a finished run, a file is missing, or a model does not match the manifest.
    """
    # The models' libraries (scipy, lifetimes) and pandas are imported here, not with this module: `forecast run`
    # imports the registry before reading the log, and imports them on a second thread while it reads.
    import pandas as pd

    from forecast.models import GammaGamma, PurchaseModel
    from forecast.models.artifacts import load_model

    path = Path(run_dir)
    manifest = read_manifest(path)
    if manifest is None:
        raise ArtifactError(
            f"{path} is not a finished run (no readable {MANIFEST}); a run killed part-way leaves none. "
            "Run `forecast run` for that as_of."
        )
    try:
        customers = pd.read_parquet(path / "customers.parquet")
        segments = pd.read_csv(path / "segments.csv", dtype={"segmentation": "string", "segment": "string"})
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"The run {path} is incomplete: {exc}. Re-run `forecast run` for that as_of.") from None
    customers["customer_id"] = customers["customer_id"].astype("string")
    expected = manifest.get("models", {}).get("sha256", {})
    models: dict[str, Any] = {}
    for role, name in MODEL_FILES.items():
        model_path = path / RUN_MODELS / name
        if expected and model_path.is_file() and sha256_file(model_path) != expected.get(name):
            raise ArtifactError(
                f"{model_path} does not match the SHA-256 recorded in {path / MANIFEST}: the model was changed "
                "after the run. Re-run `forecast run` for that as_of."
            )
        models[role] = load_model(model_path)
    purchases, spend = models["purchases"], models["spend"]
    if not isinstance(purchases, PurchaseModel) or not isinstance(spend, GammaGamma):
        raise ArtifactError(f"The models in {path / RUN_MODELS} are not a purchase model and a Gamma-Gamma model.")
    return StoredRun(path, manifest, customers.set_index("customer_id"), segments, purchases, spend)
