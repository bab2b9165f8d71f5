"""What the Spark tests compare with the DuckDB engine, and how they run the console script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sysconfig
import venv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

#: Per-customer numbers and totals: the engines sum in different orders.
RELATIVE = 1e-9
#: Tolerances of the CSV files, which round money to cents and other figures to 4 significant figures
#: (forecast.batch.outputs.csv_number): two engines' values a hair apart may round one step apart.
CSV_RELATIVE, CSV_ABSOLUTE = 1e-3, 0.01

#: The DuckDB engine's run files that the Spark engine does not write: its customers.parquet is on shared storage,
#: named by the manifest, and customers.csv is not written from there.
SPARK_MISSING_FILES = {"customers.csv"}
#: The DuckDB engine's manifest keys that the Spark engine's manifest lacks yet.
SPARK_MISSING_MANIFEST_KEYS = {"data_quality"}


def assert_close(actual: pd.DataFrame, expected: pd.DataFrame, rtol: float = RELATIVE, atol: float = 1e-12) -> None:
    """The same rows in the same order, numbers within the tolerances, everything else equal as text."""
    assert list(actual.index) == list(expected.index)
    for column in expected.columns:
        left, right = actual[column], expected[column]
        if pd.api.types.is_numeric_dtype(right) and not pd.api.types.is_bool_dtype(right):
            np.testing.assert_allclose(left.to_numpy(float), right.to_numpy(float), rtol=rtol, atol=atol,
                                       err_msg=column)  # fmt: skip
        else:
            assert [str(v) for v in left.tolist()] == [str(v) for v in right.tolist()], column  # NA as '<NA>'


def assert_same_totals(actual: dict[str, float | None], expected: dict[str, float | None]) -> None:
    """The manifest's totals: the same keys, equal values (the intervals' too: the same draws and seed)."""
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert (actual[key] is None) == (value is None), key
        if value is not None:
            assert actual[key] == pytest.approx(value, rel=RELATIVE), key


def assert_same_record(actual: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    """A manifest record (``comparison``, ``intervals``): the same keys and values, numbers within RELATIVE."""
    assert (actual is None) == (expected is None)
    if actual is None or expected is None:
        return
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert_same_value(actual[key], value, key)


def assert_same_value(actual: Any, expected: Any, where: str) -> None:
    """Records compared as ``assert_same_record``, lists item by item, floats within RELATIVE, others equal."""
    if isinstance(expected, dict):
        assert_same_record(actual, expected)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_same_value(left, right, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=RELATIVE, abs=1e-9), where
    else:
        assert actual == expected, where


def run_console_script(
    tmp_path: Path, config: dict[str, object], output: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `forecast` console script by its absolute path with ``--engine spark``, as cron does: the
    venv not activated, PATH starting with a folder whose `python3` is a bare interpreter without the project or its
    libraries. ``output`` is passed as ``--output``; without it the run goes to the config's output, in the month's
    folder."""
    bare = tmp_path / "bare"
    if not bare.exists():
        venv.create(bare, with_pip=False)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    script = Path(sysconfig.get_path("scripts")) / "forecast"
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV")}
    env["PATH"] = f"{bare / 'bin'}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin"
    command = [str(script), "run", str(config_path), "--engine", "spark"]
    if output is not None:
        command += ["--output", str(output)]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def report_text(folder: Path, section: str) -> str:
    """A section of a run's report.html as text: tags, charts (their SVG) and runs of white space left out."""
    html = (folder / "report.html").read_text(encoding="utf-8")
    part = html[html.index(f'<section id="{section}">') :]
    part = part[: part.index("</section>")]
    part = re.sub(r"<svg.*?</svg>", " ", part, flags=re.DOTALL)
    return " ".join(re.sub(r"<[^>]+>", " ", part).split())


def assert_same_backtest(spark_folder: Path, duckdb_folder: Path) -> None:
    """backtest.json says the same on both engines (but its timings), and backtest_customers.csv holds the same rows."""
    documents = [
        json.loads((folder / "backtest.json").read_text(encoding="utf-8")) for folder in (spark_folder, duckdb_folder)
    ]
    for document in documents:
        document.pop("timings_seconds")
    assert_same_value(documents[0], documents[1], "backtest.json")
    rows = [
        pd.read_csv(folder / "backtest_customers.csv", dtype={"customer_id": str})
        for folder in (spark_folder, duckdb_folder)
    ]
    assert_close(rows[0], rows[1], rtol=CSV_RELATIVE, atol=CSV_ABSOLUTE)
