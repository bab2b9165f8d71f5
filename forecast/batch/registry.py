"""The run registry: as_of dates, where each run goes in a runs root, and which runs may be replaced or compared.

Layout (docs/operations.md, "Folder layout and atomic writes")::

    <output>/<as_of YYYY-MM-DD>/        one folder per run (its files: ``forecast.report.run_folder``)
    <models_dir>/<as_of YYYY-MM-DD>/    the published copy of the run's fitted models

A folder is a finished run when it holds ``manifest.json``; folders whose name starts with a dot
(``.<name>.partial-<pid>``, staging of a run in progress or killed) are never read as runs. Finished runs are
read back with ``forecast.report.run_folder.read_run``.
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
from forecast.report.run_folder import MANIFEST, RUN_ENTRIES, read_manifest

if TYPE_CHECKING:
    from forecast.config import RunConfig

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

    Only a run folder may be replaced: one with a manifest and nothing but a run's files (``RUN_ENTRIES``), not
    holding a path of ``keep`` (the config file and the input).

    Raises
    ------
    OutputError
        ``target`` is not a folder, holds a path of ``keep``, or holds anything but a run.
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
    foreign = sorted(entry.name for entry in target.iterdir() if entry.name not in RUN_ENTRIES)
    previous = read_manifest(target)
    if foreign or (previous is None and any(target.iterdir())):
        names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5:,} more" if len(foreign) > 5 else "")
        held = f"holds files a run does not write ({names})" if foreign else f"holds no {MANIFEST}"
        raise OutputError(
            f"The output folder {target} {held}, so it is not a forecast run; replacing it would delete them, and "
            "--force never does. Choose another --output, or an empty or new folder."
        )
    return previous


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
