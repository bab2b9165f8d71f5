"""Config loading: strict keys, clear errors, paths relative to the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecast.config import load_config
from forecast.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_configs_load(sample_config_path):
    config = load_config(sample_config_path)
    assert config.time_unit == "week"
    assert str(config.as_of) == "1997-09-30"
    assert load_config(sample_config_path.parent / "cdnow.yaml").data.path == "lifetimes:CDNOW_master.txt"


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "data: {path: log.csv}\nhorizon_monts: 12\n")
    with pytest.raises(ConfigError, match="unknown key 'horizon_monts'"):
        load_config(path)


def test_nested_unknown_and_missing_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'data.customer'"):
        load_config(write(tmp_path, "data: {path: log.csv, customer: id}\n"))
    with pytest.raises(ConfigError, match=r"missing key 'data'"):
        load_config(write(tmp_path, "margin: 0.3\n"))


def test_invalid_values_are_explained(tmp_path):
    with pytest.raises(ConfigError, match=r"'margin'.*less than or equal to 1"):
        load_config(write(tmp_path, "data: {path: log.csv}\nmargin: 30\n"))
    with pytest.raises(ConfigError, match=r"'time_unit'"):
        load_config(write(tmp_path, "data: {path: log.csv}\ntime_unit: fortnight\n"))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_data_path_is_relative_to_the_config_file(tmp_path):
    config = load_config(write(tmp_path, "data: {path: logs/tx.csv}\n"))
    assert Path(config.data.path) == (tmp_path / "logs" / "tx.csv").resolve()


@pytest.mark.parametrize("limit", ["4GB", "512MB", "1.5GB", "8GiB", "50%"])
def test_memory_limits_duckdb_accepts_load(tmp_path, limit):
    assert load_config(write(tmp_path, f"data: {{path: log.csv}}\nduckdb: {{memory_limit: '{limit}'}}\n")).duckdb


@pytest.mark.parametrize("limit", ["lots", "4", "4 parsecs", "4GB'; SELECT 1; --"])
def test_memory_limits_duckdb_refuses_are_config_errors(tmp_path, limit):
    with pytest.raises(ConfigError, match=r"'duckdb.memory_limit': .*DuckDB refuses it.*such as '4GB'"):
        load_config(write(tmp_path, f'data: {{path: log.csv}}\nduckdb: {{memory_limit: "{limit}"}}\n'))


def test_dates_must_lie_between_1900_and_2999(tmp_path):
    assert str(load_config(write(tmp_path, "data: {path: log.csv}\nas_of: 2999-12-31\n")).as_of) == "2999-12-31"
    with pytest.raises(ConfigError, match=r"'as_of': .*from 1900-01-01 to 2999-12-31"):
        load_config(write(tmp_path, "data: {path: log.csv}\nas_of: 9999-12-31\n"))
    with pytest.raises(ConfigError, match=r"'backtest.calibration_end': .*from 1900-01-01"):
        load_config(write(tmp_path, "data: {path: log.csv}\nbacktest: {calibration_end: 1899-12-31}\n"))


def test_yaml_aliases_are_refused_and_anchors_alone_are_harmless(tmp_path):
    with pytest.raises(ConfigError, match=r"uses the YAML alias \*p \(line 2\)"):
        load_config(write(tmp_path, "data: &p {path: log.csv}\nbacktest: *p\n"))
    assert load_config(write(tmp_path, "data: &p {path: log.csv}\n")).data


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes("\ufeffdata: {path: log.csv}  # café\n".encode())
    assert load_config(path).data


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("s3a://bucket/logs/*.parquet", True),
        ("abfss://container@account.dfs.core.windows.net/logs/", True),
        ("hdfs://namenode:8020/logs", True),
        ("table:sales.transactions", True),
        ("lifetimes:CDNOW_master.txt", True),
        ("logs/transactions.csv", False),
    ],
)
def test_data_paths_on_storage_systems_and_table_names_are_passed_on_untouched(
    tmp_path: Path, written: str, kept: bool
) -> None:
    """A URI with a scheme or a table name was rewritten relative to the config's folder ('.../configs/s3a:/bucket
    ...does not exist'), so a cluster config could not run from the command line; a relative local path is still
    resolved against the config's folder."""
    config_path = tmp_path / "configs" / "run.yaml"
    config_path.parent.mkdir()
    config_path.write_text(f"data: {{path: '{written}', customer_id: c, timestamp: t, amount: a}}\n", encoding="utf-8")
    path = load_config(config_path).data.path
    assert path == (written if kept else str((config_path.parent / written).resolve()))
