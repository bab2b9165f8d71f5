"""The Python API gives the numbers of the command line: the same summary, the same customer table, the same run.

The README's Python examples are run as written, in a folder holding a copy of configs/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import forecast
from forecast.cli import app
from forecast.errors import ConfigError, DataError
from tests.batch.conftest import write_config, write_csv

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "1997-09-30"
SUMMARY_COLUMNS = ["frequency", "recency", "T", "monetary_value", "revenue"]


@pytest.fixture(scope="module")
def cli_run(cdnow_sample, tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    """The CDNOW sample through `forecast run` (the CLI): its customers.parquet, and the config it ran."""
    folder = tmp_path_factory.mktemp("cli")
    config = write_config(folder, write_csv(cdnow_sample, folder / "log.csv"), as_of=AS_OF)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    return pd.read_parquet(folder / "runs" / AS_OF / "customers.parquet").set_index("customer_id"), config


@pytest.fixture(scope="module")
def typed_log(cdnow_sample) -> pd.DataFrame:
    """The same rows as a notebook holds them: timestamps as datetimes, amounts as floats, ids as text."""
    return cdnow_sample.assign(
        timestamp=pd.to_datetime(cdnow_sample["timestamp"]), amount=cdnow_sample["amount"].astype(float)
    )


def test_summarize_on_a_dataframe_equals_the_command_lines_summary(cli_run, typed_log):
    customers, _ = cli_run
    summary = forecast.summarize(typed_log, as_of=AS_OF)
    assert summary.index.name == "customer_id"
    assert summary.index.equals(customers.index)
    for column in SUMMARY_COLUMNS:
        np.testing.assert_allclose(summary[column], customers[column], rtol=1e-12, atol=0, err_msg=column)


def test_summarize_on_a_path_equals_it_on_the_dataframe(cli_run, typed_log):
    _, config = cli_run
    from_path = forecast.summarize(config.parent / "log.csv", as_of=AS_OF)
    pd.testing.assert_frame_equal(from_path, forecast.summarize(typed_log, as_of=AS_OF))


def test_score_gives_the_customer_table_the_command_line_writes(cli_run, typed_log):
    customers, _ = cli_run
    scored = forecast.score(forecast.summarize(typed_log, as_of=AS_OF), margin=0.3, as_of=AS_OF)
    assert list(scored.columns) == list(customers.columns)
    for column in scored.columns:
        if pd.api.types.is_numeric_dtype(customers[column]):
            np.testing.assert_allclose(scored[column], customers[column], rtol=1e-12, atol=0, err_msg=column)
        else:
            assert (scored[column].astype(str) == customers[column].astype(str)).all(), column


def test_run_takes_a_config_path_or_object(cli_run, tmp_path):
    _, config = cli_run
    loaded = forecast.load_config(config)
    moved = loaded.model_copy(update={"output": str(tmp_path / "runs"), "models_dir": str(tmp_path / "models")})
    result = forecast.run(moved, as_of=AS_OF)
    assert result.output == tmp_path / "runs" / AS_OF
    assert result.manifest["as_of"] == AS_OF
    assert (result.output / "customers.parquet").is_file() and (tmp_path / "models" / AS_OF).is_dir()


def test_settings_are_validated_as_the_config_is(typed_log):
    with pytest.raises(ConfigError, match="unknown key 'horizon'"):
        forecast.score(forecast.summarize(typed_log, as_of=AS_OF), horizon=12)
    with pytest.raises(ConfigError, match="'time_unit': Input should be"):
        forecast.summarize(typed_log, time_unit="fortnight")
    with pytest.raises(DataError, match=r"the DataFrame has no column 'when' \(data.timestamp\)"):
        forecast.summarize(typed_log, timestamp="when")


def test_the_package_exports_what_its_all_names():
    assert set(forecast.__all__) == {*forecast._EXPORTS, "__version__"}
    for name in forecast.__all__:
        assert getattr(forecast, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'pipeline'"):
        forecast.pipeline  # noqa: B018


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.slow
def test_the_readmes_python_examples_run_as_written(tmp_path):
    blocks = readme_python_blocks()
    assert blocks, "the README has Python examples"
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "", "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(tmp_path / "mpl"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
