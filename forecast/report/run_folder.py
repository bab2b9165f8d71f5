"""A finished run folder: the names of its files, and the one reader of its manifest, tables, backtest and models.

``forecast run`` writes the folder (``forecast.batch.pipeline``); the report, ``forecast report`` and the drift
against the previous run read it back, all through ``read_run`` and ``read_models``. The reader lives in the
report stage, the first stage that reads finished runs, so that the batch (which comes after the report) uses
the same reader without the report importing from the batch: data flows one way.

Layout of a run folder (docs/operations.md, "Folder layout and atomic writes")::

    manifest.json                     written last: a folder holding it is a finished run
    customers.parquet, customers.csv  per customer
    segments.csv                      per segment of every segmentation, with an "all" row
    report.html, run.log
    models/purchases.json             the run's own copy of its fitted models
    models/spend.json
    backtest.json, backtest_customers.csv and the backtest's SVG plots, when a backtest ran
"""

from __future__ import annotations

import datetime as dt
import json
import math
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import pandas as pd
import pyarrow.parquet as pq

from forecast.config import TimeUnit
from forecast.data.fingerprints import file_sha256
from forecast.errors import ArtifactError, clip
from forecast.models import GammaGamma, PurchaseModel
from forecast.models.artifacts import load_model, model_from_dict
from forecast.value.segments import segmentation_name

MANIFEST = "manifest.json"
CUSTOMERS_PARQUET = "customers.parquet"
CUSTOMERS_CSV = "customers.csv"
SEGMENTS_CSV = "segments.csv"
REPORT_HTML = "report.html"
RUN_LOG = "run.log"
#: The folder of the run's own copy of its fitted models, and the file of each model role.
RUN_MODELS = "models"
MODEL_FILES = {"purchases": "purchases.json", "spend": "spend.json"}
BACKTEST_JSON = "backtest.json"
BACKTEST_CUSTOMERS_CSV = "backtest_customers.csv"
#: Backtest plot name (the key under ``plots`` in backtest.json) -> file name next to backtest.json.
PLOT_FILES = {
    "conditional_expectation": "backtest_conditional_expectation.svg",
    "tracking": "backtest_tracking.svg",
    "deciles": "backtest_deciles.svg",
}
#: Everything a run folder may hold: the only entries ``--force`` may replace.
RUN_ENTRIES = frozenset({
    MANIFEST, CUSTOMERS_PARQUET, CUSTOMERS_CSV, SEGMENTS_CSV, REPORT_HTML, RUN_LOG, RUN_MODELS, BACKTEST_JSON,
    BACKTEST_CUSTOMERS_CSV, *PLOT_FILES.values(),
})  # fmt: skip


@dataclass(frozen=True)
class RunFolder:
    """The files of one finished run folder, as read from disk.

    Attributes
    ----------
    path
        The run folder.
    manifest
        manifest.json (docs/operations.md, "manifest.json").
    customers
        The per-customer table (the columns asked for), indexed by customer_id when that column was read.
    segments
        segments.csv, or None when the folder has none.
    backtest
        backtest.json, or None when no backtest ran or it cannot be read.
    notes
        What could not be read (a missing segments.csv, an unreadable backtest.json).
    """

    path: Path
    manifest: dict[str, Any]
    customers: pd.DataFrame
    segments: pd.DataFrame | None
    backtest: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def as_of(self) -> dt.date:
        """The run's observation end."""
        return dt.date.fromisoformat(str(self.manifest.get("as_of")))


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a finished run folder, or None when the folder holds no readable manifest.

    For scanning folders that may or may not be runs; ``read_run`` says what is wrong instead.
    """
    try:
        document = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


#: The type of each top-level manifest entry the report reads (a key may be missing, or null where a run had none:
#: ``NULLABLE_ENTRIES``).
MANIFEST_TYPES: dict[str, type] = {
    "as_of": str, "time_unit": str, "horizon_months": int, "config": dict, "input": dict, "models": dict,
    "heuristic": dict, "totals": dict, "comparison": dict, "data_quality": dict, "warnings": list, "versions": dict,
    "timings_seconds": dict, "backtest": dict, "drift": dict, "previous_run": dict,
}  # fmt: skip
#: The entries a run writes as null when it had none (no backtest, no previous run, no drift to compare).
NULLABLE_ENTRIES = frozenset({"backtest", "drift", "previous_run"})
#: The time units a run counts in, and the longest horizon it forecasts (``forecast.config.RunConfig``).
TIME_UNITS: tuple[str, ...] = get_args(TimeUnit)
MAX_HORIZON_MONTHS = 600
#: The totals every run records, with either engine; the others are numbers, or null where a run had none.
REQUIRED_TOTALS = ("clv", "clv_heuristic", "expected_purchases")
#: The numbers of the matched comparison (``forecast.value.comparison.comparison_record``) and of its ``net``.
COMPARISON_NUMBERS = ("predictive", "heuristic", "gap")
COMPARISON_NET_NUMBERS = ("cost_per_purchase", "cost_per_active_month", "predictive", "heuristic", "gap")


def read_run(
    run_dir: str | Path,
    customers: pd.DataFrame | None = None,
    columns: Sequence[str] | None = None,
    with_customers: bool = True,
) -> RunFolder:
    """Read a finished run folder's manifest, customer table, segment table and backtest (when present).

    Parameters
    ----------
    run_dir
        A folder written by ``forecast run``.
    customers
        The per-customer table, when the caller holds it (``forecast run`` does): customers.parquet is then
        not read.
    columns
        The columns of customers.parquet to read, those the file lacks left out; None reads them all.
    with_customers
        False: the customer table is not read (left empty), for a caller that reads it elsewhere (Spark).

    Returns
    -------
    RunFolder

    Raises
    ------
    ArtifactError
        The folder, its manifest.json or its customers.parquet is missing or unreadable, or the manifest holds
        values no run writes (``manifest_problems``: it was edited by hand).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ArtifactError(f"Run folder {path} does not exist. Pass the output folder of `forecast run`.")
    manifest = _read_run_manifest(path)
    if not with_customers:
        customers = pd.DataFrame()
    elif customers is None:
        customers = read_run_customers(path, manifest, columns)
    notes: list[str] = []
    segments = None
    if (path / SEGMENTS_CSV).is_file():
        segments = read_segments(path / SEGMENTS_CSV)
    else:
        notes.append(f"{SEGMENTS_CSV} is missing from the run folder.")
    backtest = None
    if (path / BACKTEST_JSON).is_file():
        try:
            backtest = json.loads((path / BACKTEST_JSON).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            notes.append(f"{BACKTEST_JSON} could not be read ({exc}); the backtest section is left out.")
    return RunFolder(path, manifest, customers, segments, backtest, notes)


def _read_run_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the run folder ``path``, or an ArtifactError that says why it cannot be read."""
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            f"{path} has no {MANIFEST}, so it is not a finished run (a run killed part-way leaves none). "
            "Run `forecast run` for that as_of."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({exc}). Re-run `forecast run`.") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path} is not a run manifest (a JSON object). Re-run `forecast run`.")
    wrong = manifest_problems(manifest)
    if wrong:
        raise ArtifactError(
            f"{manifest_path} was changed after its run wrote it: {'; '.join(wrong[:5])}. Restore it, or re-run "
            "`forecast run` for that as_of (with --force if its input changed)."
        )
    return manifest


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """What in a run manifest no run writes, each as "'key' is <value>, not <what a run writes>" (empty if none).

    The entries the report reads are checked down to the values it reads: the type of each top-level entry
    (``MANIFEST_TYPES``; null only for ``NULLABLE_ENTRIES``), as_of a date, time_unit one of ``TIME_UNITS``,
    horizon_months a whole number of months from 1 to ``MAX_HORIZON_MONTHS``, the totals numbers (the
    ``REQUIRED_TOTALS`` present), and the numbers the report takes from ``models`` and ``comparison``.
    """
    wrong = [
        f"'{key}' is {'null' if manifest[key] is None else type(manifest[key]).__name__}, not {kind.__name__}"
        for key, kind in MANIFEST_TYPES.items()
        if key in manifest
        and not isinstance(manifest[key], kind)
        and (manifest[key] is not None or key not in NULLABLE_ENTRIES)
    ]
    as_of = manifest.get("as_of")
    if isinstance(as_of, str) and not is_iso_date(as_of):
        wrong.append(f"'as_of' is {as_of[:40]!r}, not a YYYY-MM-DD date")
    time_unit = manifest.get("time_unit")
    if isinstance(time_unit, str) and time_unit not in TIME_UNITS:
        wrong.append(f"'time_unit' is {_shown(time_unit)}, not {', '.join(TIME_UNITS[:-1])} or {TIME_UNITS[-1]}")
    horizon = manifest.get("horizon_months")
    if isinstance(horizon, int) and (isinstance(horizon, bool) or not 1 <= horizon <= MAX_HORIZON_MONTHS):
        wrong.append(f"'horizon_months' is {_shown(horizon)}, not a whole number from 1 to {MAX_HORIZON_MONTHS}")
    if isinstance(manifest.get("totals"), dict):
        wrong += _totals_problems(manifest["totals"])
    if isinstance(manifest.get("models"), dict):
        wrong += _models_problems(manifest["models"])
    if isinstance(manifest.get("comparison"), dict):
        wrong += _comparison_problems(manifest["comparison"])
    return wrong


def _totals_problems(totals: dict[str, Any]) -> list[str]:
    """The manifest's ``totals``: each a finite number or null, the ``REQUIRED_TOTALS`` numbers."""
    wrong = [problem for key in REQUIRED_TOTALS for problem in _number_problems("totals", totals, key)]
    for key in sorted(totals.keys() - set(REQUIRED_TOTALS)):
        wrong += _number_problems("totals", totals, key, nullable=True)
    return wrong


def _models_problems(models: dict[str, Any]) -> list[str]:
    """The manifest's ``models``: each fitted model an object whose fit figures the report shows are numbers (the
    spend model's log-likelihood may be null: the mean spend has none), and the SHA-256 of each model file text.

    A missing figure is left to the report, which writes it as 0; a manifest without models says it has none.
    """
    wrong = []
    for role in ("purchases", "spend"):
        model = models.get(role, {})
        if not isinstance(model, dict):
            wrong.append(f"'models.{role}' is {_shown(model)}, not a fitted model (an object)")
            continue
        wrong += _number_problems(f"models.{role}", model, "log_likelihood", nullable=role == "spend", required=False)
        for key in ("customers", "unique_rows"):
            wrong += _number_problems(f"models.{role}", model, key, required=False)
    sha256 = models.get("sha256")
    if sha256 is not None and not (isinstance(sha256, dict) and all(isinstance(v, str) for v in sha256.values())):
        wrong.append(f"'models.sha256' is {_shown(sha256)}, not the SHA-256 text of each model file")
    return wrong


def _comparison_problems(comparison: dict[str, Any]) -> list[str]:
    """The manifest's like-for-like ``comparison``: its span a whole number of months, its totals and gap numbers,
    its ratio a number or null, its basis text, and its ``net`` null or the costs and the totals net of them."""
    span = comparison.get("span_months")
    wrong = []
    if not isinstance(span, int) or isinstance(span, bool) or span < 1:
        wrong.append(f"'comparison.span_months' is {_shown(span)}, not a whole number of months")
    for key in COMPARISON_NUMBERS:
        wrong += _number_problems("comparison", comparison, key)
    wrong += _number_problems("comparison", comparison, "ratio", nullable=True, required=False)
    if not isinstance(comparison.get("basis", ""), str):
        wrong.append(f"'comparison.basis' is {_shown(comparison['basis'])}, not text")
    net = comparison.get("net")
    if isinstance(net, dict):
        for key in COMPARISON_NET_NUMBERS:
            wrong += _number_problems("comparison.net", net, key)
    elif net is not None:
        wrong.append(f"'comparison.net' is {_shown(net)}, not an object")
    return wrong


def _number_problems(
    where: str, mapping: dict[str, Any], key: str, nullable: bool = False, required: bool = True
) -> list[str]:
    """What is wrong with ``mapping[key]`` as a finite number (or null, when ``nullable``), named ``where.key``:
    nothing, or one problem (a missing key is one only when ``required``)."""
    if key not in mapping:
        return [f"'{where}' has no '{key}'"] if required else []
    value = mapping[key]
    if _is_finite_number(value) or (value is None and nullable):
        return []
    return [f"'{where}.{key}' is {_shown(value)}, not a number"]


def _is_finite_number(value: Any) -> bool:
    """True for a finite JSON number (not true or false, nor the NaN and Infinity that Python's json reads)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    """A manifest value as it reads in a message: its JSON, cut short."""
    return clip(json.dumps(value), 40)


def is_iso_date(text: str) -> bool:
    """True when ``text`` is a calendar date written YYYY-MM-DD (as a run writes its as_of)."""
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def read_run_customers(run_dir: Path, manifest: dict[str, Any], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A run's customer table, read where it is (``customers_location``; ``read_customers``).

    Raises
    ------
    ArtifactError
        The table is missing, unreadable, or on storage only Spark reads.
    """
    return read_customers(local_customers_path(customers_location(run_dir, manifest)), columns)


def customers_location(run_dir: Path, manifest: dict[str, Any]) -> str:
    """Where a run's customers.parquet is: in the run folder, or where the manifest's ``customers_parquet`` says
    (a Spark run writes it to ``spark.output``, shared storage such as ``file:///mnt/...`` or ``s3a://...``)."""
    inside = run_dir / CUSTOMERS_PARQUET
    elsewhere = manifest.get("customers_parquet")
    if inside.exists() or not isinstance(elsewhere, str):
        return str(inside)
    return elsewhere


def local_customers_path(location: str) -> Path:
    """A customers.parquet location (``customers_location``) as a local path.

    Raises
    ------
    ArtifactError
        The location is on storage this machine reads only through Spark (``s3a://``, ``hdfs://``, ...).
    """
    if location.startswith("file://"):
        return Path(urllib.parse.urlparse(location).path)
    if "://" in location:
        raise ArtifactError(
            f"The run's customers.parquet is at {location}, which only Spark reads. Read the run where that storage "
            "is mounted, or give the run a spark.output on a shared mount (file:///...)."
        )
    return Path(location)


def read_customers(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a customers.parquet file (or a Spark run's folder of part files): the columns asked for that it holds
    (all when None).

    Returns
    -------
    pandas.DataFrame
        Indexed by customer_id (as strings) when that column is read; categories keep their order.

    Raises
    ------
    ArtifactError
        The file is missing or unreadable.
    """
    try:
        # The Spark engine writes customers.parquet as a folder of part files: read as one dataset.
        schema = pq.ParquetDataset(path).schema if path.is_dir() else pq.read_schema(path)
        wanted = schema.names if columns is None else [c for c in columns if c in schema.names]
        customers = pq.read_table(path, columns=wanted, memory_map=True).to_pandas(split_blocks=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path.parent} has no {path.name}. Re-run `forecast run` to write it.") from None
    except Exception as exc:
        raise ArtifactError(f"{path} cannot be read ({exc}). Re-run `forecast run`.") from None
    if "customer_id" in customers.columns:
        customers["customer_id"] = customers["customer_id"].astype("string")
        customers = customers.set_index("customer_id")
    return customers


def read_segments(path: Path) -> pd.DataFrame:
    """Read a segments.csv file; segment labels stay text ("NA" is a label, not a missing value).

    Segmentations are given their current names (``forecast.value.segments.segmentation_name``), so a run written
    when the value tiers and RFM groups were labelled ``segment`` and ``rfm_group`` reads as ``value_tier`` and
    ``rfm``.
    """
    segments = pd.read_csv(
        path, dtype={"segmentation": "string", "segment": "string"}, keep_default_na=False, na_values=[""]
    )
    if "segmentation" in segments.columns:
        segments["segmentation"] = segments["segmentation"].map(segmentation_name, na_action="ignore")
    return segments


def read_models(run: RunFolder) -> tuple[PurchaseModel, GammaGamma]:
    """The fitted purchase and spend models of a run.

    The run's own copy under models/ is read when the folder holds one, and each file must match the SHA-256
    the manifest records, so tables and models always belong to the same run; a folder without a copy (the
    Spark engine writes none) gives the models recorded in the manifest.

    Raises
    ------
    ArtifactError
        The manifest records no models, a model file was changed after the run or cannot be loaded, or the
        models are not a purchase model and a Gamma-Gamma model.
    """
    recorded = run.manifest.get("models")
    if not isinstance(recorded, dict) or "purchases" not in recorded or "spend" not in recorded:
        raise ArtifactError(f"The manifest has no fitted models under '{RUN_MODELS}'. Re-run `forecast run`.")
    if (run.path / RUN_MODELS).is_dir():
        recorded_sha256 = recorded.get("sha256") or {}
        purchases, spend = (_load_model_copy(run.path, name, recorded_sha256) for name in MODEL_FILES.values())
    else:
        try:
            purchases, spend = (model_from_dict(recorded[role]) for role in ("purchases", "spend"))
        except ArtifactError as exc:
            raise ArtifactError(f"The manifest's model {exc}") from None
    if not isinstance(purchases, PurchaseModel) or not isinstance(spend, GammaGamma):
        raise ArtifactError(f"The models of {run.path} are not a purchase model and a Gamma-Gamma model.")
    return purchases, spend


def _load_model_copy(run_dir: Path, name: str, recorded_sha256: dict[str, str]) -> PurchaseModel | GammaGamma:
    """Load one model file of a run's own copy, refused when it does not match the SHA-256 the manifest records."""
    path = run_dir / RUN_MODELS / name
    if recorded_sha256 and path.is_file() and file_sha256(path) != recorded_sha256.get(name):
        raise ArtifactError(
            f"{path} does not match the SHA-256 recorded in {run_dir / MANIFEST}: the model was changed "
            "after the run. Re-run `forecast run` for that as_of."
        )
    return load_model(path)
