"""Publishing under real faults: a run and its models together or not at all, one run per month at a time, a log
replaced while a run reads it, and a simulated log replaced whole. Real files and real processes throughout."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from forecast.batch import pipeline
from forecast.batch.pipeline import run
from forecast.batch.publish import PAUSE_BEFORE_COMMIT_ENV
from forecast.cli import app
from forecast.config import load_config
from forecast.data.simulate import write_simulated_log
from forecast.errors import DataError
from tests.batch.conftest import digests, write_config, write_csv

ROOT = Path(__file__).resolve().parents[2]


def start_paused_run(config_path: Path, month: str, pause_seconds: float = 120) -> subprocess.Popen[bytes]:
    """`forecast run` in a child process that pauses with every output staged, just before its commit."""
    env = {**os.environ, PAUSE_BEFORE_COMMIT_ENV: str(pause_seconds), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "forecast.cli", "run", str(config_path), "--as-of", month]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until_staged(child: subprocess.Popen[bytes], runs: Path, as_of: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and child.poll() is None:
        if [p for p in runs.glob(f".{as_of}.partial-*") if (p / "manifest.json").is_file()]:
            time.sleep(0.3)  # inside the pause
            return
        time.sleep(0.05)
    raise AssertionError(f"the run never reached its commit: {child.communicate()[1].decode()[-2000:]}")


def test_a_run_whose_models_cannot_be_published_publishes_nothing(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """models_dir where a file stands: the command exits 2 and neither the run folder nor models appear, and a
    --force re-run of an existing month leaves that month's run and models as they were (each failure leaves its
    log beside the run folders, as every failed run does)."""
    log = write_csv(cdnow_sample, tmp_path / "log.csv")
    config_path = write_config(tmp_path, log)
    previous = run(load_config(config_path), dt.date(1997, 6, 30))
    before = digests(previous.output)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the models folder should be", encoding="utf-8")
    config_path = write_config(tmp_path, log, models_dir=str(blocked / "models"))
    for month in ("1997-07", "1997-06"):
        outcome = CliRunner().invoke(app, ["run", str(config_path), "--as-of", month, "--force"])
        assert outcome.exit_code == 2, outcome.output
        assert "Traceback" not in outcome.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")) == [
        "1997-06-30", "1997-06-30.failed.log", "1997-07-31.failed.log"
    ]  # fmt: skip
    assert digests(previous.output) == before


def test_two_runs_of_one_month_never_write_at_once_and_a_killed_runs_lock_is_taken_over(
    tmp_path: Path, cdnow_sample: pd.DataFrame
) -> None:
    """While one run of June holds the month's lock, a second (of other data) exits 2 naming the holder and writes
    nothing; once the holder is killed, the next run takes the lock over and publishes."""
    config_path = write_config(tmp_path, write_csv(cdnow_sample, tmp_path / "log.csv"))
    other_path = write_config(tmp_path / "other", write_csv(cdnow_sample.iloc[:3000], tmp_path / "other.csv"),
                              output=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"))  # fmt: skip
    holder = start_paused_run(config_path, "1997-06")
    wait_until_staged(holder, tmp_path / "runs", "1997-06-30")
    second = CliRunner().invoke(app, ["run", str(other_path), "--as-of", "1997-06"])
    assert second.exit_code == 2, second.output
    assert f"being written by process {holder.pid}" in second.output
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
    assert not (tmp_path / "runs" / "1997-06-30").exists() and not (tmp_path / "models" / "1997-06-30").exists()
    third = CliRunner().invoke(app, ["run", str(other_path), "--as-of", "1997-06"])
    assert third.exit_code == 0, third.output
    assert (tmp_path / "runs" / "1997-06-30" / "manifest.json").is_file()
    assert (tmp_path / "models" / "1997-06-30" / "purchases.json").is_file()
    assert not list((tmp_path / "runs").glob(".*")) and not list((tmp_path / "models").glob(".*"))


@contextmanager
def full_disk(tmp_path: Path, fault: str) -> Iterator[tuple[Path, list[str]]]:
    """A folder where no file can grow, and the Python code that a child process runs first to make it so.

    ``tmpfs``: a 16 kB tmpfs mounted there and filled (ENOSPC; needs root and a kernel that lets us mount).
    ``rlimit``: a file-size limit of 4 bytes in the child (EFBIG, as in tests/test_faults.py). Skipped when the
    fault cannot be made here.
    """
    disk = tmp_path / "disk"
    disk.mkdir()
    if fault == "rlimit":
        resource = pytest.importorskip("resource")  # not on Windows
        if not hasattr(resource, "RLIMIT_FSIZE"):
            pytest.skip("no RLIMIT_FSIZE on this platform")
        yield disk, ["import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (4, 4))"]
        return
    mount = ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)]
    try:
        mounted = subprocess.run(mount, capture_output=True, text=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with open(disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError, match="No space left"):
            while True:
                filler.write(b"\0" * 4096)
        yield disk, []
    finally:
        subprocess.run(["umount", str(disk)], check=True, timeout=30)


@pytest.mark.parametrize("fault", ["tmpfs", "rlimit"])
def test_a_full_disk_when_the_months_lock_is_taken_is_an_output_error_that_leaves_no_lock(
    tmp_path: Path, cdnow_sample: pd.DataFrame, fault: str
) -> None:
    """The disk fills as the run writes its process id into the month's lock: this used to end in "an unexpected
    error ... OSError: [Errno 28] No space left on device ... report it" and leave an empty .<as_of>.lock behind.
    It is exit 2 saying what failed, where and what to do, and the lock file is removed."""
    log = write_csv(cdnow_sample, tmp_path / "log.csv")
    with full_disk(tmp_path, fault) as (disk, setup):
        config_path = write_config(tmp_path / "config", log, output=str(disk / "runs"),
                                   models_dir=str(disk / "models"))  # fmt: skip
        code = "; ".join([*setup, "from forecast.cli import main", "main()"])
        command = [sys.executable, "-c", code, "run", str(config_path), "--as-of", "1997-06"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        message = " ".join(finished.stderr.split())
        assert finished.returncode == 2, finished.stderr[-2000:]
        assert f"Writing the month's lock {disk / 'runs' / '.1997-06-30.lock'} failed" in message
        assert ("No space left on device" if fault == "tmpfs" else "File too large") in message
        assert "Free disk space or choose another output folder" in message and "nothing was written" in message
        assert "unexpected" not in message and "Traceback" not in message
        assert not list(disk.rglob("*.lock"))
        assert not (disk / "runs" / "1997-06-30").exists() and not (disk / "models").exists()
        # The failure log is best effort: on the full disk none is left, not an empty or partial one.
        failed_log = disk / "runs" / "1997-06-30.failed.log"
        assert fault != "tmpfs" or not failed_log.exists()


def test_a_log_replaced_while_the_run_reads_it_is_not_published(tmp_path: Path, cdnow_sample: pd.DataFrame) -> None:
    """The log renamed over while the run is staged (DuckDB re-reads files, so the figures could mix the two): exit
    2 naming the file, and no run folder or models."""
    log = write_csv(cdnow_sample, tmp_path / "log.csv")
    config_path = write_config(tmp_path, log)
    child = start_paused_run(config_path, "1997-06", pause_seconds=5)
    wait_until_staged(child, tmp_path / "runs", "1997-06-30")
    replacement = write_csv(cdnow_sample.iloc[:3000], tmp_path / "log.csv.new")
    os.replace(replacement, log)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stderr.decode()[-2000:]
    assert f"The input file {log} was replaced or rewritten while the run read it" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert not (tmp_path / "runs" / "1997-06-30").exists() and not (tmp_path / "models" / "1997-06-30").exists()


def test_simulate_over_an_existing_file_replaces_it_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails half way leaves the previous file as it was and no partial file; one that succeeds
    replaces it."""
    out = tmp_path / "log.parquet"
    write_simulated_log(out, 500, seed=1)
    before = out.read_bytes()

    class FailingWriter(pq.ParquetWriter):
        def write_table(self, table, row_group_size=None):  # type: ignore[no-untyped-def]
            super().write_table(table, row_group_size)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "ParquetWriter", FailingWriter)
    with pytest.raises(OSError, match="No space left"):
        write_simulated_log(out, 2_000, seed=2)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.parquet"]
    monkeypatch.undo()
    write_simulated_log(out, 2_000, seed=2)
    assert pq.read_metadata(out).num_rows > pq.read_metadata(pa.BufferReader(before)).num_rows


def test_a_parquet_log_rewritten_in_place_before_the_summary_reads_it_is_named(
    tmp_path: Path, cdnow_sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB reads a Parquet log's files again when the summary is made: the file rewritten in place (same path,
    other bytes: half of it overwritten) just before that step made DuckDB or Arrow fail with their own text,
    shown as an unexpected error. Now: the DataError naming the change, and no run folder or models."""
    log = tmp_path / "log.parquet"
    cdnow_sample.to_parquet(log, index=False)
    config = load_config(write_config(tmp_path, {"path": str(log), "customer_id": "customer_id",
                                                 "timestamp": "timestamp", "amount": "amount"}))  # fmt: skip
    real_forecast = pipeline.forecast

    def rewrite_then_forecast(*args, **kwargs):  # type: ignore[no-untyped-def]
        size = log.stat().st_size
        with log.open("r+b") as file:
            file.seek(size // 2)
            file.write(b"\0" * (size - size // 2))
        return real_forecast(*args, **kwargs)

    monkeypatch.setattr(pipeline, "forecast", rewrite_then_forecast)
    with pytest.raises(DataError, match="was replaced or rewritten while the run read it"):
        run(config, as_of=dt.date(1997, 6, 30))
    assert not (tmp_path / "runs" / "1997-06-30").exists() and not (tmp_path / "models" / "1997-06-30").exists()
