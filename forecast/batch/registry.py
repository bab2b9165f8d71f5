"""The run registry: as_of dates, where each run goes in a runs root, and which runs may be replaced or compared.

Layout (docs/operations.md, "Folder layout and atomic writes")::

    <output>/<as_of YYYY-MM-DD>/        one folder per run (its files: ``forecast.report.run_folder``)
    <models_dir>/<as_of YYYY-MM-DD>/    the published copy of the run's fitted models

A folder is a finished run when it holds ``manifest.json``; folders whose name starts with a dot
(``.<name>.partial-<pid>``, staging of a run in progress or killed) are never read as runs. Finished runs are
read back with ``forecast.report.run_folder.read_run``. A folder is replaced (``--force``) only when its manifest is
one a run wrote and it holds nothing a run does not write (``check_replaceable``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from forecast.errors import ConfigError, OutputError
from forecast.report.run_folder import (
    CUSTOMERS_PARQUET,
    MANIFEST,
    MODEL_FILES,
    RUN_ENTRIES,
    RUN_MODELS,
    is_iso_date,
    read_manifest,
)

if TYPE_CHECKING:
    from forecast.config import RunConfig

_MONTH = re.compile(r"^\d{4}-\d{2}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: The files of a run's own models/ folder, and of the customers.parquet folder Spark writes (part files, their
#: checksums and the _SUCCESS marker).
_MODEL_NAMES = re.compile("^(" + "|".join(re.escape(name) for name in MODEL_FILES.values()) + ")$")
_SPARK_PART = re.compile(r"^\.?(part-[^/]+|_SUCCESS)(\.crc)?$")


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


def paths_never_replaced(config: RunConfig, input_files: Sequence[Path]) -> tuple[Path, ...]:
    """The run's own input files and config file: no output folder holding one of them is ever replaced."""
    return (*input_files, *([config._source] if config._source else []))


def check_replaceable(target: Path, keep: tuple[Path, ...] = ()) -> dict[str, Any] | None:
    """Refuse a target that no option may replace; return the manifest of the run it holds (None if empty or new).

    Only a run folder this tool wrote may be replaced: one whose manifest is a run's (``run_manifest_gaps``)
    and that holds nothing but a run's files (``run_folder_strangers``), not holding a path of ``keep`` (the config
    file and the input).

    Raises
    ------
    OutputError
        ``target`` is not a folder, holds a path of ``keep``, or holds anything but a run this tool wrote.
    """
    if not target.exists():
        return None
    if not target.is_dir():
        raise OutputError(f"The output {target} exists and is not a folder. Choose another --output.")
    inside = [path for path in keep if path.resolve().is_relative_to(target.resolve())]
    if inside:
        raise OutputError(
            f"The output folder {target} holds {inside[0]}, the run's own config or input; replacing the folder "
            "would delete it. Choose another --output (the default is <config output>/<as_of>/)."
        )
    if not any(target.iterdir()):
        return None
    previous = read_manifest(target)
    reasons = []
    strangers = run_folder_strangers(target, previous)
    if strangers:
        names = ", ".join(strangers[:5]) + (f" and {len(strangers) - 5:,} more" if len(strangers) > 5 else "")
        reasons.append(f"holds files a run does not write ({names})")
    if previous is None:
        reasons.append(f"holds no readable {MANIFEST}")
    elif gaps := run_manifest_gaps(previous):
        listed = ", ".join(gaps[:-1]) + (" or " if len(gaps) > 1 else "") + gaps[-1]
        reasons.append(f"holds a {MANIFEST} that no run wrote (it has no {listed})")
    if reasons:
        raise OutputError(
            f"The output folder {target} {' and '.join(reasons)}, so it is not a forecast run; replacing it would "
            "delete its files, and --force never does. Choose another --output, or an empty or new folder."
        )
    return previous


def run_manifest_gaps(manifest: dict[str, Any]) -> list[str]:
    """What a ``manifest.json`` lacks of the record every ``forecast run`` writes (empty when a run wrote it).

    Every run, with either engine, records a YYYY-MM-DD ``as_of``, the ``versions`` of the libraries it ran with
    (clv-forecast among them), its fitted ``models`` and its ``input``: with DuckDB the fingerprint of the rows up
    to as_of (``input.as_of_sha256``), with Spark (``engine: spark``) the paths it read (``input.paths``).
    """
    gaps = []
    as_of = manifest.get("as_of")
    if not (isinstance(as_of, str) and is_iso_date(as_of)):
        gaps.append("as_of date")
    versions = manifest.get("versions")
    if not (isinstance(versions, dict) and isinstance(versions.get("clv-forecast"), str)):
        gaps.append("versions of clv-forecast")
    models = manifest.get("models")
    if not (isinstance(models, dict) and all(isinstance(models.get(role), dict) for role in MODEL_FILES)):
        gaps.append("fitted models")
    record = manifest.get("input")
    identity = "paths" if manifest.get("engine") == "spark" else "as_of_sha256"
    if not (isinstance(record, dict) and record.get(identity)):
        gaps.append(f"input.{identity}")
    return gaps


def run_folder_strangers(folder: Path, manifest: dict[str, Any] | None) -> list[str]:
    """The entries of ``folder`` that no run writes, by their paths inside it (sorted; a folder's ends in "/").

    A run writes regular files named in ``RUN_ENTRIES`` and a ``models/`` folder of the ``MODEL_FILES``; the Spark
    engine (``engine: spark`` in the manifest) writes customers.parquet as a folder of Spark's part files. No run
    writes a link.
    """
    spark = manifest is not None and manifest.get("engine") == "spark"
    strangers = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or entry.name not in RUN_ENTRIES:
            strangers.append(entry.name + ("/" if entry.is_dir() else ""))
        elif entry.name == RUN_MODELS:
            strangers += _strangers_inside(entry, _MODEL_NAMES) if entry.is_dir() else [entry.name]
        elif entry.name == CUSTOMERS_PARQUET and spark and entry.is_dir():
            strangers += _strangers_inside(entry, _SPARK_PART)
        elif not entry.is_file():
            strangers.append(entry.name + "/")
    return strangers


def _strangers_inside(folder: Path, allowed: re.Pattern[str]) -> list[str]:
    """The entries of a run's subfolder that are not regular files named as ``allowed``, as "<folder>/<name>"."""
    return [
        f"{folder.name}/{entry.name}" + ("/" if entry.is_dir() else "")
        for entry in sorted(folder.iterdir())
        if entry.is_symlink() or not entry.is_file() or not allowed.match(entry.name)
    ]


def check_overwrite(
    target: Path, as_of: dt.date, fingerprint: dict[str, Any], force: bool, keep: tuple[Path, ...] = ()
) -> None:
    """Refuse to replace an existing folder unless it is a run of the same input, or a run and ``force`` is set.

    ``force`` replaces a run as of another date or of other data, never a folder this tool did not write
    (``check_replaceable``).

    Raises
    ------
    OutputError
        ``target`` is not a run folder, holds a path of ``keep``, or (without ``force``) is a run as of another date
        or made from other data (different ``as_of_sha256``).
    """
    previous = check_replaceable(target, keep)
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
