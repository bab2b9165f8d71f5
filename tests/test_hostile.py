"""Hostile files: nothing a file contains is ever executed, and nothing leaks into SQL or spreadsheets."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.config import DataConfig, load_config
from forecast.data.ingest import read_transactions
from forecast.data.summary import summarize
from forecast.errors import ArtifactError, ConfigError
from forecast.models import BetaGeo, FitResult
from forecast.models.artifacts import load_model, model_artifact, write_json

ROOT = Path(__file__).resolve().parents[1]


class _Exploit:
    """Unpickling this runs ``touch <marker>``: proof that a loader executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def artifact() -> dict:
    model = BetaGeo()
    model.result_ = FitResult(
        params={"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259},
        standard_errors={"r": 0.0127, "alpha": 0.3786, "a": 0.1887, "b": 0.6573},
        covariance_log_params=None,
        log_likelihood=-9582.43,
        converged=True,
        customers=2357,
        unique_rows=1186,
    )
    return model_artifact(model, "purchases", {"as_of": "1997-09-30"})


def test_a_well_formed_artifact_loads(tmp_path, artifact):
    write_json(tmp_path / "purchases.json", artifact)
    assert load_model(tmp_path / "purchases.json").params_["alpha"] == 4.4136


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "purchases.json"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema_version=99), "schema version 99"),
        (lambda d: d.update(name="__import__('os').system('true')"), "unknown model"),
        (lambda d: d["params"].update(r="__import__('os')"), r"parameters \['r'\] are not finite positive numbers"),
        (lambda d: d["params"].update(alpha=-1.0), r"parameters \['alpha'\] are not finite positive"),
        (lambda d: d["params"].update(a=True), r"parameters \['a'\] are not finite positive"),
        (lambda d: d["params"].pop("b"), r"needs parameters \('r', 'alpha', 'a', 'b'\)"),
        (lambda d: d.pop("log_likelihood"), "'log_likelihood' must be a number"),
        (lambda d: d.update(covariance_log_params=[[1.0, "x"]]), "'covariance_log_params' must be a square list"),
        (lambda d: d.update(customers="2357"), "'customers' must be an integer"),
        (lambda d: d.update(standard_errors={"r": {"$class": "os.system"}}), "'standard_errors' must be an object"),
    ],
)
def test_malformed_artifacts_are_refused_by_schema(tmp_path, artifact, change, message):
    change(artifact)
    path = tmp_path / "purchases.json"
    path.write_text(json.dumps(artifact), encoding="utf-8")
    with pytest.raises(ArtifactError, match=message):
        load_model(path)


def test_truncated_and_non_object_json_are_refused(tmp_path, artifact):
    path = tmp_path / "purchases.json"
    path.write_text(json.dumps(artifact)[:50], encoding="utf-8")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        load_model(path)
    path.write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(ArtifactError, match="schema version None"):
        load_model(path)


def test_yaml_python_tags_are_refused(tmp_path):
    marker = tmp_path / "executed"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: !!python/object/apply:os.system ['touch {marker}']\n"
        f"output: !!python/object/new:pathlib.Path ['{tmp_path}']\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(config)
    assert not marker.exists()


HOSTILE_NAMES = {
    "customer": 'id"; DROP TABLE sentinel; --',
    "timestamp": "when'); DROP TABLE sentinel; --",
    "amount": 'amount" FROM sentinel; SELECT 1 AS "x',
    "segment": "region'\"; DELETE FROM sentinel; --",
}


def test_column_names_and_paths_cannot_inject_sql(tmp_path):
    """Quotes and semicolons in column names, segment columns and the path are data, never SQL."""
    folder = tmp_path / "it's; DROP TABLE sentinel; --"
    folder.mkdir()
    path = folder / "log.csv"
    frame = pd.DataFrame(
        {
            HOSTILE_NAMES["customer"]: ["A", "A", "B"],
            HOSTILE_NAMES["timestamp"]: ["2020-01-01", "2020-01-08", "2020-01-03"],
            HOSTILE_NAMES["amount"]: [10.0, 20.0, 5.0],
            HOSTILE_NAMES["segment"]: ["north", "north", "south"],
        }
    )
    frame.to_csv(path, index=False)
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE sentinel AS SELECT 42 AS answer")
    config = DataConfig(
        path=str(path),
        customer_id=HOSTILE_NAMES["customer"],
        timestamp=HOSTILE_NAMES["timestamp"],
        amount=HOSTILE_NAMES["amount"],
        segment_columns=[HOSTILE_NAMES["segment"]],
        order_id=HOSTILE_NAMES["customer"],
    )
    transactions = read_transactions(config, con)
    summary = summarize(con, dt.date(2020, 1, 31), 7.0, segment_columns=[HOSTILE_NAMES["segment"]])
    assert summary.loc["A", "frequency"] == 1
    assert summary.loc["B", HOSTILE_NAMES["segment"]] == "south"
    assert transactions.quality.rows == 3
    assert con.execute("SELECT answer FROM sentinel").fetchall() == [(42,)]


def test_hostile_timestamp_format_and_delimiter_are_literals(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("customer_id;timestamp;amount\nA;2020'01'05;3\nA;2020'02'05;4\n", encoding="utf-8")
    config = DataConfig(path=str(path), delimiter=";", timestamp_format="%Y'%m'%d")
    transactions = read_transactions(config)
    days = transactions.connection.execute("SELECT CAST(ts AS DATE) FROM transactions ORDER BY 1").fetchall()
    assert days == [(dt.date(2020, 1, 5),), (dt.date(2020, 2, 5),)]


def test_formula_like_customer_ids_are_escaped_in_csv_outputs(tmp_path, monkeypatch):
    """Ids starting with = + - @ get a leading apostrophe in customers.csv; the Parquet keeps them as given."""
    from forecast.data.simulate import simulate_transactions

    monkeypatch.chdir(tmp_path)
    log = simulate_transactions(200, end=dt.date(2020, 12, 31), seed=5)
    hostile = ['=HYPERLINK("http://x")', "+1-555", "-42", "@SUM(A1:A9)"]
    first_ids = list(dict.fromkeys(log["customer_id"]))[: len(hostile)]
    log["customer_id"] = log["customer_id"].replace(dict(zip(first_ids, hostile, strict=True)))
    log.to_csv(tmp_path / "log.csv", index=False)
    (tmp_path / "run.yaml").write_text("data: {path: log.csv}\nas_of: 2020-12-31\noutput: out\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", "run.yaml"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(tmp_path / "out" / "2020-12-31" / "customers.csv", dtype={"customer_id": str})
    for customer in hostile:
        assert "'" + customer in set(written["customer_id"])
    assert not written["customer_id"].str.match(r"^[=+\-@]").any()
    raw = pd.read_parquet(tmp_path / "out" / "2020-12-31" / "customers.parquet")
    assert set(hostile) <= set(raw["customer_id"])


def alias_bomb(levels: int) -> str:
    """A "billion laughs" YAML: each level is a list of nine aliases to the level before (9**levels leaves)."""
    names = [f"l{level}" for level in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]" for previous, name in itertools.pairwise(names)]
    return "\n".join([*lines, f"data: *{names[-1]}"]) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """A 9-level bomb (387 million leaves, about 400 bytes) used to print megabytes and take gigabytes.

    It runs in a child process, so that a regression times out instead of exhausting the test machine.
    """
    (tmp_path / "bomb.yaml").write_text(alias_bomb(9), encoding="utf-8")
    child = subprocess.run(
        [sys.executable, "-m", "forecast.cli", "validate", "bomb.yaml"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 2, child.stderr[:2000]
    assert "Traceback" not in child.stderr
    assert len(child.stderr) < 2000
    assert "uses the YAML alias *l0 (line 2)" in " ".join(child.stderr.split())


def test_a_config_larger_than_64_kib_is_refused(tmp_path):
    (tmp_path / "run.yaml").write_text("data: {path: log.csv}\n" + "# padding\n" * 7000, encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "run.yaml")])
    assert result.exit_code == 2
    assert "is 70,022 bytes; a run config is at most 65,536" in " ".join(result.output.split())


def test_a_huge_value_is_quoted_in_short(tmp_path):
    """A 20 KB value and 5,000 unknown keys: the message quotes the value's ends and names the first keys."""
    keys = "".join(f"k{i}: 1\n" for i in range(5000))
    (tmp_path / "run.yaml").write_text(f"data: {{path: log.csv}}\nmargin: {'9' * 20_000}x\n{keys}", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "run.yaml")])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert len(message) < 2000
    assert (
        f"'margin': Input should be a valid number, unable to parse string as a number (got '{'9' * 144} ... "
        in message
    )
    assert f" ... {'9' * 48}x')" in message
    assert "unknown key 'k0'" in message and "unknown key 'k8'" in message and "and 4,991 more." in message


def test_markup_in_a_message_is_printed_as_text(tmp_path):
    """rich would read '[/x]' in a key as a closing tag (MarkupError); it must come out as typed."""
    (tmp_path / "run.yaml").write_text('data: {path: log.csv}\n"[/x]": 1\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "run.yaml")])
    assert result.exit_code == 2, result.output
    assert "unknown key '[/x]'" in result.output
