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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from forecast.data.fingerprints import file_sha256
from forecast.errors import ArtifactError
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


#: The type of each top-level manifest entry the report reads (a key may be missing, or null where a run had none).
MANIFEST_TYPES: dict[str, type] = {
    "as_of": str, "time_unit": str, "horizon_months": int, "config": dict, "input": dict, "models": dict,
    "heuristic": dict, "totals": dict, "data_quality": dict, "warnings": list, "versions": dict,
    "timings_seconds": dict, "backtest": dict, "drift": dict, "previous_run": dict,
}  # fmt: skip


def read_run(
    run_dir: str | Path, customers: pd.DataFrame | None = None, columns: Sequence[str] | None = None
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

    Returns
    -------
    RunFolder

    Raises
    ------
    ArtifactError
        The folder, its manifest.json or its customers.parquet is missing or unreadable.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ArtifactError(f"Run folder {path} does not exist. Pass the output folder of `forecast run`.")
    manifest = _read_run_manifest(path)
    if customers is None:
        customers = read_customers(path / CUSTOMERS_PARQUET, columns)
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
    wrong = [
        f"'{key}' is {type(manifest[key]).__name__}, not {kind.__name__}"
        for key, kind in MANIFEST_TYPES.items()
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], kind)
    ]
    as_of = manifest.get("as_of")
    if isinstance(as_of, str) and not _is_iso_date(as_of):
        wrong.append(f"'as_of' is {as_of[:40]!r}, not a YYYY-MM-DD date")
    if wrong:
        raise ArtifactError(
            f"{manifest_path} was changed after its run wrote it: {'; '.join(wrong[:5])}. Restore it, or re-run "
            "`forecast run` for that as_of (with --force if its input changed)."
        )
    return manifest


def _is_iso_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def read_customers(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a customers.parquet file: the columns asked for that it holds (all when None).

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
        present = pq.read_schema(path).names
        wanted = present if columns is None else [c for c in columns if c in present]
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
