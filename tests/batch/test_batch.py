"""The monthly batch: as_of dates, runs-root layout, backfill, reproducibility, refusals, kill -9 safety.

Data: the CDNOW 2,357-customer sample that lifetimes ships (Fader, Hardie & Lee 2005), 6,919 rows,
1997-01-01 .. 1998-06-30, written here as a CSV so that tests can truncate and edit it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from forecast.batch.pipeline import run
from forecast.batch.publish import PAUSE_BEFORE_COMMIT_ENV, clean_leftovers
from forecast.batch.registry import (
    find_previous_run,
    last_complete_month_end,
    month_ends_between,
    parse_as_of,
    run_folder,
)
from forecast.cli import app
from forecast.config import load_config
from forecast.errors import ConfigError, OutputError
from forecast.report.run_folder import read_run
from tests.batch.conftest import REPRODUCIBLE_FILES, digests, write_config, write_csv

ROOT = Path(__file__).resolve().parents[2]


def test_parse_as_of_accepts_month_and_day() -> None:
    assert parse_as_of("1997-06") == dt.date(1997, 6, 30)
    assert parse_as_of("2024-02") == dt.date(2024, 2, 29)
    assert parse_as_of("1997-06-15") == dt.date(1997, 6, 15)
    with pytest.raises(ConfigError, match="YYYY-MM"):
        parse_as_of("06/1997")
    with pytest.raises(ConfigError, match="YYYY-MM"):
        parse_as_of("1997-13")


def test_last_complete_month_end_is_the_month_before_unless_the_log_ends_on_a_month_end() -> None:
    assert last_complete_month_end("1998-06-30 00:00:00") == dt.date(1998, 6, 30)
    assert last_complete_month_end("1998-06-30 23:59:59") == dt.date(1998, 6, 30)
    assert last_complete_month_end("1998-06-29 10:00:00") == dt.date(1998, 5, 31)
    assert last_complete_month_end(dt.date(1998, 1, 3)) == dt.date(1997, 12, 31)


def test_month_ends_between_runs_in_order() -> None:
    assert month_ends_between(dt.date(1997, 11, 30), dt.date(1998, 2, 1)) == [
        dt.date(1997, 11, 30), dt.date(1997, 12, 31), dt.date(1998, 1, 31), dt.date(1998, 2, 28),
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="before"):
        month_ends_between(dt.date(1998, 2, 28), dt.date(1997, 11, 30))


def test_as_of_ignores_later_transactions(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """A run as of 1997-06-30 on the full log equals a run on the log cut at that day, byte for byte."""
    full = write_config(tmp_path / "full", write_csv(cdnow_sample, tmp_path / "full.csv"))
    cut_rows = cdnow_sample[cdnow_sample["timestamp"] <= "1997-06-30"]
    cut = write_config(tmp_path / "cut", write_csv(cut_rows, tmp_path / "cut.csv"))
    as_of = dt.date(1997, 6, 30)
    on_full = run(load_config(full), as_of)
    on_cut = run(load_config(cut), as_of)
    assert on_full.output == tmp_path / "full" / "runs" / "1997-06-30"
    assert digests(on_full.output) == digests(on_cut.output)
    assert on_full.manifest["input"]["rows"] == len(cdnow_sample) > on_cut.manifest["input"]["rows"] == len(cut_rows)
    assert on_full.manifest["input"]["rows_up_to_as_of"] == len(cut_rows)
    assert on_full.manifest["input"]["as_of_sha256"] == on_cut.manifest["input"]["as_of_sha256"]
    assert on_full.manifest["input"]["sha256"] != on_cut.manifest["input"]["sha256"]
    customers = pd.read_parquet(on_full.output / "customers.parquet")  # full precision (the CSV: 4 figures)
    assert len(customers) == cut_rows["customer_id"].nunique()
    assert customers["T"].max() == pytest.approx((as_of - dt.date(1997, 1, 1)).days / 7)


def test_default_as_of_is_last_complete_month(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """A log ending on 1997-06-20 defaults to as_of 1997-05-31, written to <runs root>/1997-05-31."""
    rows = cdnow_sample[cdnow_sample["timestamp"] <= "1997-06-20"]
    config = write_config(tmp_path, write_csv(rows, tmp_path / "log.csv"))
    result = run(load_config(config))
    assert result.manifest["as_of"] == "1997-05-31"
    assert result.output == tmp_path / "runs" / "1997-05-31"
    assert result.models == tmp_path / "models" / "1997-05-31"
    assert (result.models / "purchases.json").read_bytes() == (result.output / "models" / "purchases.json").read_bytes()


def test_cli_rejects_a_malformed_as_of_without_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, yaml.safe_load((ROOT / "configs" / "cdnow_sample.yaml").read_text())["data"])
    outcome = CliRunner().invoke(app, ["run", str(config), "--as-of", "June 1997"])
    assert outcome.exit_code == 2
    assert "YYYY-MM" in outcome.output and "Traceback" not in outcome.output


def test_as_of_after_the_log_ends_is_warned_about(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    rows = cdnow_sample[cdnow_sample["timestamp"] <= "1997-06-20"]
    config = load_config(write_config(tmp_path, write_csv(rows, tmp_path / "log.csv")))
    result = run(config, dt.date(1997, 6, 30))
    assert any("after the last transaction (1997-06-20)" in w for w in result.manifest["warnings"])


def test_backfill_writes_one_run_per_month_each_compared_with_the_one_before(tmp_path: Path) -> None:
    """`forecast run --as-of 1997-04 --through 1997-06` writes three runs, each compared with the one before."""
    config = write_config(tmp_path, yaml.safe_load((ROOT / "configs" / "cdnow_sample.yaml").read_text())["data"])
    outcome = CliRunner().invoke(app, ["run", str(config), "--as-of", "1997-04", "--through", "1997-06"])
    assert outcome.exit_code == 0, outcome.output
    months = ["1997-04-30", "1997-05-31", "1997-06-30"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == months
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == months
    for index, month in enumerate(months):
        manifest = json.loads((tmp_path / "runs" / month / "manifest.json").read_text())
        assert manifest["as_of"] == month
        assert f"as_of {month}: 2,357 customers" in outcome.stdout
        assert "Fitting bgnbd" in (tmp_path / "runs" / month / "run.log").read_text()
        if index == 0:
            assert manifest["previous_run"] is None and manifest["drift"] is None
        else:
            assert manifest["previous_run"]["as_of"] == months[index - 1]
            assert manifest["drift"]["previous_as_of"] == months[index - 1]
    assert "--through" in CliRunner().invoke(app, ["run", str(config), "--through", "1997-06"]).output


def test_rerun_is_byte_identical(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """The same config on the same data gives the same bytes; the manifest differs only in timings."""
    config = load_config(write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "log.csv")))
    first = run(config, dt.date(1997, 9, 30))
    before = digests(first.output)
    manifest_before = json.loads((first.output / "manifest.json").read_text())
    second = run(config, dt.date(1997, 9, 30))
    assert second.output == first.output
    assert digests(second.output) == before
    manifest_after = json.loads((second.output / "manifest.json").read_text())
    assert manifest_before.pop("timings_seconds") != manifest_after.pop("timings_seconds")
    assert manifest_before == manifest_after


def test_refuses_a_run_folder_made_from_changed_input(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """Editing a row up to as_of makes a re-run refuse; appending later rows does not; --force replaces."""
    log = write_csv(cdnow_sample[cdnow_sample["timestamp"] <= "1997-06-30"], tmp_path / "log.csv")
    config_path = write_config(tmp_path, log)
    config = load_config(config_path)
    first = run(config, dt.date(1997, 6, 30))
    before = digests(first.output)

    write_csv(cdnow_sample, log)  # next months appended: the rows up to as_of are the same
    assert digests(run(config, dt.date(1997, 6, 30)).output) == before

    edited = cdnow_sample.copy()
    edited.loc[0, "amount"] = "129.33"  # customer 0001's first purchase, 1997-01-01
    write_csv(edited, log)
    with pytest.raises(OutputError, match=r"different input.*--force"):
        run(config, dt.date(1997, 6, 30))
    assert digests(first.output) == before
    outcome = CliRunner().invoke(app, ["run", str(config_path), "--as-of", "1997-06"])
    assert outcome.exit_code == 2 and "--force" in outcome.output
    failed_log = first.output.parent / "1997-06-30.failed.log"
    assert "different input" in failed_log.read_text()
    forced = CliRunner().invoke(app, ["run", str(config_path), "--as-of", "1997-06", "--force"])
    assert forced.exit_code == 0, forced.output
    assert not failed_log.exists()
    manifest = json.loads((first.output / "manifest.json").read_text())
    assert manifest["input"]["as_of_sha256"] != first.manifest["input"]["as_of_sha256"]
    assert digests(first.output)["customers.csv"] != before["customers.csv"]


def test_a_run_fingerprinted_by_another_method_is_not_replaced_silently(
    tmp_path: Path, cdnow_sample: pd.DataFrame
) -> None:
    """A run whose fingerprint came from another method (an older DuckDB) cannot be compared: refuse, name it."""
    config = load_config(write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "log.csv")))
    first = run(config, dt.date(1997, 6, 30))
    manifest_path = first.output / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["input"]["fingerprint_method"] = "duckdb-hash-0.9"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match=r"another method \(duckdb-hash-0.9; now duckdb-hash-.*--force"):
        run(config, dt.date(1997, 6, 30))
    assert run(config, dt.date(1997, 6, 30), force=True).manifest["input"]["fingerprint_method"] != "duckdb-hash-0.9"


def test_refuses_to_replace_a_folder_that_is_not_a_run(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    config = load_config(write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "log.csv")))
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a forecast run"):
        run(config, dt.date(1997, 6, 30), output=precious)
    run(config, dt.date(1997, 6, 30), output=tmp_path / "june")
    with pytest.raises(OutputError, match="as of 1997-06-30, not 1997-07-31"):
        run(config, dt.date(1997, 7, 31), output=tmp_path / "june")
    assert (precious / "thesis.txt").read_text() == "keep me"


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_clean_leftovers_restores_a_folder_moved_aside(tmp_path: Path) -> None:
    """A run killed between the two commit renames leaves the old folder as .<name>.old-<pid>: it comes back."""
    pid = dead_pid()
    moved = tmp_path / f".1997-06-30.old-{pid}"
    moved.mkdir()
    (moved / "manifest.json").write_text("{}")
    partial = tmp_path / f".1997-07-31.partial-{pid}"
    partial.mkdir()
    (partial / "customers.csv").write_text("half")
    mine = tmp_path / f".1997-08-31.partial-{os.getpid()}"
    mine.mkdir()
    foreign = tmp_path / f".cache.partial-{pid}"
    foreign.mkdir()
    clean_leftovers(tmp_path)
    assert (tmp_path / "1997-06-30" / "manifest.json").read_text() == "{}"
    assert not moved.exists() and not partial.exists()
    assert mine.exists()  # a live process's staging folder is left alone
    assert foreign.exists()  # not a run folder's: not ours to delete
    clean_leftovers(tmp_path, "cache")
    assert not foreign.exists()


@pytest.mark.slow
def test_kill_9_while_committing_leaves_previous_outputs_intact(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """SIGKILL a `forecast run --force` over an existing run just before its commit: nothing published changes.

    The subprocess has staged every output (manifest included) when it is killed; the previous run
    folder and models keep their bytes, the staging folder is hidden and never read as a run, and the
    next run cleans it.
    """
    log = write_csv(cdnow_sample, tmp_path / "log.csv")
    config_path = write_config(tmp_path, log)
    config = load_config(config_path)
    previous = run(config, dt.date(1997, 6, 30))
    before = digests(previous.output, [*REPRODUCIBLE_FILES, "manifest.json"])
    models_before = digests(previous.models, ["purchases.json", "spend.json"])

    edited = cdnow_sample.copy()
    edited.loc[0, "amount"] = "129.33"
    write_csv(edited, log)
    env = {**os.environ, PAUSE_BEFORE_COMMIT_ENV: "120", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "forecast.cli", "run", str(config_path), "--as-of", "1997-06", "--force"]
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = tmp_path / "runs"
    staged: list[Path] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and child.poll() is None:
        staged = [p for p in runs.glob(".1997-06-30.partial-*") if (p / "manifest.json").is_file()]
        if staged:
            break
        time.sleep(0.1)
    assert staged, f"the run never reached its commit: {child.communicate()[1].decode()[-2000:]}"
    time.sleep(0.5)  # inside the pause, after the fsync
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL

    assert digests(previous.output, [*REPRODUCIBLE_FILES, "manifest.json"]) == before
    assert digests(previous.models, ["purchases.json", "spend.json"]) == models_before
    assert read_run(previous.output).as_of == dt.date(1997, 6, 30)
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["1997-06-30"]
    assert find_previous_run(runs, dt.date(1997, 7, 31)) == previous.output

    write_csv(cdnow_sample, log)
    following = run(config, dt.date(1997, 7, 31))
    assert not list(runs.glob(".*"))
    assert following.manifest["previous_run"]["path"] == str(previous.output)
    assert following.output == run_folder(runs, dt.date(1997, 7, 31))


@pytest.mark.slow
def test_disk_full_while_writing_leaves_previous_outputs_intact(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """A run whose writes fail (file-size limit of 100 kB: EFBIG, like a full disk) exits 2 and changes nothing."""
    log = write_csv(cdnow_sample, tmp_path / "log.csv")
    config_path = write_config(tmp_path, log)
    previous = run(load_config(config_path), dt.date(1997, 6, 30))
    before = digests(previous.output, [*REPRODUCIBLE_FILES, "manifest.json"])

    edited = cdnow_sample.copy()
    edited.loc[0, "amount"] = "129.33"
    write_csv(edited, log)
    limit = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)); "
    code = limit + "from forecast.cli import main; main()"
    command = [sys.executable, "-c", code, "run", str(config_path), "--as-of", "1997-06", "--force"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2, finished.stderr
    assert "File too large" in finished.stderr and "Traceback" not in finished.stderr
    assert digests(previous.output, [*REPRODUCIBLE_FILES, "manifest.json"]) == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["1997-06-30", "1997-06-30.failed.log"]
    failed_log = (tmp_path / "runs" / "1997-06-30.failed.log").read_text()
    assert "Fitting bgnbd" in failed_log and "File too large" in failed_log


def test_no_drift_against_a_run_of_other_data_in_the_same_runs_root(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """Two data sets written to one runs root: the second is not compared with the first, and says why."""
    shop_a = load_config(write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "shop_a.csv")))
    first = run(shop_a, dt.date(1997, 6, 30))
    shop_b = load_config(write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "shop_b.csv")))
    second = run(shop_b, dt.date(1997, 7, 31))
    assert second.manifest["drift"] is None
    assert second.manifest["previous_run"]["path"] == str(first.output)
    assert any("made from other data" in message for message in second.manifest["warnings"])


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_never_replaces_the_folder_holding_the_config_and_the_input(
    tmp_path: Path, cdnow_sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`forecast run run.yaml --output . --force` in the folder of the config, the log and a notes file used to
    delete all three: it is refused (exit 2, saying why) and every file stays as it was."""
    work = tmp_path / "work"
    write_csv(cdnow_sample, work / "log.csv")
    (work / "notes.txt").write_text("quarterly targets", encoding="utf-8")
    config = {"data": {"path": "log.csv"}, "models_dir": str(tmp_path / "models"), "output": "runs"}
    (work / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    before = folder_contents(work)
    monkeypatch.chdir(work)
    outcome = CliRunner().invoke(app, ["run", "run.yaml", "--as-of", "1997-06", "--output", ".", "--force"])
    assert outcome.exit_code == 2, outcome.output
    assert "the run's own config or input" in outcome.output and "Traceback" not in outcome.output
    assert folder_contents(work) == before and not (tmp_path / "models").exists()


def test_force_never_replaces_a_folder_of_other_files(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """A folder of the user's documents given as --output with --force used to be deleted with exit 0; it is
    refused, named as not a run, and left as it was; an empty folder is used."""
    config_path = write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "data" / "log.csv"))
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "budget.xlsx").write_bytes(b"PK\x03\x04 a spreadsheet")
    (documents / "manifest.json").write_text('{"as_of": "1997-06-30"}', encoding="utf-8")
    before = folder_contents(documents)
    outcome = CliRunner().invoke(app, ["run", str(config_path), "--as-of", "1997-06", "--output", str(documents),
                                       "--force"])  # fmt: skip
    assert outcome.exit_code == 2, outcome.output
    assert "files a run does not write (budget.xlsx)" in outcome.output
    assert folder_contents(documents) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    used = CliRunner().invoke(app, ["run", str(config_path), "--as-of", "1997-06", "--output", str(empty)])
    assert used.exit_code == 0, used.output
    assert (empty / "manifest.json").is_file()


def test_force_never_replaces_a_folder_that_only_looks_like_a_run(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """A web app's folder holds its own manifest.json, report.html and models/weights.txt, every name one a run
    writes: it used to be taken for a run ("holds the run as of None ... or pass --force"), and --force deleted all
    three with exit 0. It is named as no run, --force is neither suggested nor obeyed, and a real run folder with a
    file no run writes in models/, or a manifest without the input's fingerprint, is refused the same way."""
    config_path = write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "log.csv"))
    web_app = tmp_path / "webapp"
    (web_app / "models").mkdir(parents=True)
    (web_app / "manifest.json").write_text('{"name": "app"}', encoding="utf-8")
    (web_app / "report.html").write_text("<html>the app's dashboard</html>", encoding="utf-8")
    (web_app / "models" / "weights.txt").write_text("0.12 0.34", encoding="utf-8")
    before = folder_contents(web_app)
    for force in ([], ["--force"]):
        outcome = CliRunner().invoke(app, ["run", str(config_path), "--as-of", "1997-06", "--output", str(web_app),
                                           *force])  # fmt: skip
        message = " ".join(outcome.output.split())
        assert outcome.exit_code == 2, outcome.output
        assert "holds files a run does not write (models/weights.txt)" in message
        assert "holds a manifest.json that no run wrote (it has no as_of date" in message
        assert "not a forecast run" in message and "pass --force" not in message and "Traceback" not in message
        assert folder_contents(web_app) == before

    config = load_config(config_path)
    june = run(config, dt.date(1997, 6, 30), output=tmp_path / "june").output
    (june / "models" / "weights.txt").write_text("0.12 0.34", encoding="utf-8")
    with pytest.raises(OutputError, match=r"files a run does not write \(models/weights\.txt\).*--force never does"):
        run(config, dt.date(1997, 6, 30), output=june, force=True)
    (june / "models" / "weights.txt").unlink()
    manifest = json.loads((june / "manifest.json").read_text(encoding="utf-8"))
    del manifest["input"]["as_of_sha256"]
    (june / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    kept = folder_contents(june)
    with pytest.raises(OutputError, match=r"no run wrote \(it has no input\.as_of_sha256\)"):
        run(config, dt.date(1997, 6, 30), output=june, force=True)
    assert folder_contents(june) == kept


@pytest.mark.parametrize("models_dir", ["runs", "runs/models", "."])
def test_a_runs_root_that_is_or_holds_or_lies_in_the_models_folder_is_refused_before_any_work(
    tmp_path: Path, cdnow_sample: pd.DataFrame, models_dir: str
) -> None:
    """With output equal to models_dir, publishing the models replaced the run just committed (exit 0, two JSON
    files left); such a config is refused before the log is read, and nothing is written."""
    config_path = write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "data" / "log.csv"),
                               models_dir=str(tmp_path / models_dir))  # fmt: skip
    before = folder_contents(tmp_path)
    outcome = CliRunner().invoke(app, ["run", str(config_path), "--as-of", "1997-06"])
    assert outcome.exit_code == 2, outcome.output
    assert "one is inside the other" in outcome.output and "Reading" not in outcome.output
    assert folder_contents(tmp_path) == before and not (tmp_path / "runs").exists()


def test_the_cli_writes_what_pipeline_run_writes(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """`forecast run` is ``pipeline.run`` behind a command line: the same files, the reading timed and logged."""
    config_path = write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "log.csv"))
    by_cli = CliRunner().invoke(app, ["run", str(config_path), "--as-of", "1997-06", "--output", str(tmp_path / "cli")])
    assert by_cli.exit_code == 0, by_cli.output
    by_run = run(load_config(config_path), dt.date(1997, 6, 30), tmp_path / "run")
    assert digests(tmp_path / "cli") == digests(by_run.output)
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    timings = manifest["timings_seconds"]
    assert 0 < timings["ingest"] < timings["total"]
    assert manifest["data_quality"] == by_run.manifest["data_quality"]
    assert f"Reading {tmp_path / 'log.csv'}" in (tmp_path / "cli" / "run.log").read_text()


def test_the_command_exits_with_its_code_after_the_exit_handlers_and_with_its_output_flushed(tmp_path: Path) -> None:
    """The console script's exit handlers run, its output reaches a pipe, and the exit code is the command's
    (0, and 2 for a user error, without a traceback)."""
    code = (
        "import atexit, sys; atexit.register(lambda: print('exit handler ran')); from forecast.cli import main; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    missing = tmp_path / "missing.yaml"
    failed = subprocess.run([sys.executable, "-c", code, "validate", str(missing)], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert failed.returncode == 2, failed.stderr
    assert "error:" in failed.stderr and "Traceback" not in failed.stderr
    assert failed.stdout == "exit handler ran\n"
    helped = subprocess.run([sys.executable, "-c", code, "--help"], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "Customer-lifetime-value forecasts." in helped.stdout and helped.stdout.endswith("exit handler ran\n")


@pytest.fixture(scope="module")
def simulated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated log of 300,000 customers (about 900,000 rows): its summary spills at a 56 MB DuckDB limit."""
    from forecast.data.simulate import write_simulated_log

    log = tmp_path_factory.mktemp("simulated") / "log.parquet"
    write_simulated_log(log, 300_000, seed=1)
    return log


def run_command_under_duckdb_limits(
    tmp_path: Path, log: Path, memory_limit: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `forecast run` in a child process at a DuckDB memory limit; return it and every spill file seen."""
    spill = tmp_path / "spill"
    config = {
        "data": {"path": str(log)}, "as_of": "2021-06-30", "interval_draws": 0, "output": str(tmp_path / "runs"),
        "models_dir": str(tmp_path / "models"),
        "duckdb": {"memory_limit": memory_limit, "threads": 2, "temp_directory": str(spill)},
    }  # fmt: skip
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "forecast.cli", "run", str(config_path)]
    child = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    spilled: set[str] = set()
    while child.poll() is None:
        for _, _, files in os.walk(spill):  # os.walk, unlike glob, tolerates the folder going away
            spilled |= set(files)
        time.sleep(0.002)
    stdout, stderr = child.communicate()
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr), spilled


@pytest.mark.slow
def test_a_run_that_spills_to_disk_leaves_no_spill_files_when_the_process_ends(
    tmp_path: Path, simulated_log: Path
) -> None:
    """The DuckDB connection is closed before the process ends, so the files an aggregation spilled to
    ``duckdb.temp_directory`` are gone once `forecast run` has exited (DuckDB 2.0.0 and 2.0.1 both spill here)."""
    done, spilled = run_command_under_duckdb_limits(tmp_path, simulated_log, "56MB")
    assert done.returncode == 0, done.stderr[-2000:]
    assert spilled, "the run never spilled (lower duckdb.memory_limit in this test)"
    assert not [p for p in (tmp_path / "spill").glob("**/*") if p.is_file()]


@pytest.mark.slow
def test_duckdb_out_of_memory_is_a_user_error_that_names_the_settings_and_writes_nothing(
    tmp_path: Path, simulated_log: Path
) -> None:
    """DuckDB's OutOfMemoryException (8 MB for 900,000 rows) exits 2 with one paragraph naming the step and both
    settings to change, no traceback, and no run folder or models (at most the failed run's log)."""
    done, _ = run_command_under_duckdb_limits(tmp_path, simulated_log, "8MB")
    assert done.returncode == 2, done.stderr[-2000:]
    message = done.stderr.split("error:", 1)[1]
    assert "Traceback" not in done.stderr
    assert "DuckDB ran out of memory" in message
    assert "duckdb.memory_limit 8MB" in message and "duckdb.temp_directory" in message
    assert "while reading and checking" in message or "while summarising customers" in message
    assert not (tmp_path / "models").exists()
    runs = tmp_path / "runs"
    assert not runs.exists() or [p.name for p in runs.iterdir()] == ["2021-06-30.failed.log"]


def test_a_run_with_more_customers_than_a_spreadsheet_holds_writes_parquet_only_and_says_so(
    tmp_path: Path, cdnow_sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``customers_csv: auto`` a run past the spreadsheet limit skips customers.csv and warns in the
    manifest (the limit lowered to 100 customers here; the sample has 2,357)."""
    import forecast.batch.outputs

    monkeypatch.setattr(forecast.batch.outputs, "SPREADSHEET_ROWS", 100)
    config_path = write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "log.csv"))
    result = run(load_config(config_path), dt.date(1997, 6, 30), tmp_path / "run")
    assert (result.output / "customers.parquet").is_file()
    assert not (result.output / "customers.csv").exists()
    skipped = [m for m in result.manifest["warnings"] if m.startswith("customers.csv was not written")]
    assert skipped == [
        "customers.csv was not written: 2,357 customers exceed a spreadsheet's 101 rows; use customers.parquet "
        "(or set customers_csv: always)."
    ]
