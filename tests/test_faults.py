"""Faults through the CLI: a clear message, a non-zero exit, no traceback, and no partial output.

Disk full is produced for real with RLIMIT_FSIZE in a child process: the kernel refuses writes past the
limit (EFBIG), the same failure path as ENOSPC, without needing a full file system; memory exhaustion with
RLIMIT_AS, the limit ``ulimit -v`` sets. (The SIGKILL test lives in tests/batch/test_batch.py.)
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.data.simulate import simulate_transactions, write_simulated_log
from forecast.models.artifacts import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A small simulated log and a config that runs on it, in a scratch working folder."""
    monkeypatch.chdir(tmp_path)
    simulate_transactions(300, end=dt.date(2020, 12, 31), seed=11).to_csv(tmp_path / "log.csv", index=False)
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: {path: log.csv}\ntime_unit: week\nmargin: 0.5\nas_of: 2020-12-31\noutput: out\nmodels_dir: models\n",
        encoding="utf-8",
    )
    return tmp_path


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to check a failed run changed nothing).

    A failed run's own log (``<as_of>.failed.log`` beside the run folders) is not an output and is left out.
    """
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".failed.log")
    }


def no_run_written(runs_root: Path) -> bool:
    """True when no run folder (nor staging folder) exists under the runs root; a failure log may."""
    return not runs_root.exists() or all(p.name.endswith(".failed.log") for p in runs_root.iterdir())


def assert_clean_failure(result, *phrases: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.output.replace("\n", " "), result.output


def test_config_file_not_found(project):
    result = cli("run", "nowhere.yaml")
    assert_clean_failure(result, "Config file not found: nowhere.yaml", "copy configs/cdnow.yaml")
    assert not (project / "out").exists()


def test_as_of_before_the_first_transaction_writes_nothing(project):
    result = cli("run", "run.yaml", "--as-of", "2019-06-30")
    assert_clean_failure(result, "as_of 2019-06-30 is before the first transaction (2020-01-01)", "later --as-of")
    assert not (project / "out").exists()
    assert not (project / "models").exists()


def test_output_folder_not_writable(project):
    """The output's parent is a file, so the folder cannot be created (root ignores chmod, this does not)."""
    (project / "blocker").write_text("a file, not a folder\n", encoding="utf-8")
    result = cli("run", "run.yaml", "--output", "blocker/out")
    assert_clean_failure(result, "Cannot create the output folder", "Choose a writable --output")
    assert (project / "blocker").read_text(encoding="utf-8") == "a file, not a folder\n"


def test_failed_run_keeps_the_previous_outputs(project):
    """A bad config after a good run: the good run's outputs are untouched and no staging folder is left."""
    assert cli("run", "run.yaml").exit_code == 0
    before = snapshot(project / "out")
    (project / "run.yaml").write_text("data: {path: log.csv, amount: price}\noutput: out\n", encoding="utf-8")
    result = cli("run", "run.yaml")
    assert_clean_failure(result, "has no column 'price' (data.amount)", "Columns found: 'customer_id'")
    assert snapshot(project / "out") == before
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".")) == []


def test_nobody_bought_twice_fails_cleanly(project):
    lines = ["customer_id,timestamp,amount"] + [f"c{i},2020-01-{1 + i % 28:02d},{5 + i}" for i in range(40)]
    (project / "log.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("run", "run.yaml")
    assert_clean_failure(result, "Nobody in the data made a repeat purchase", "Use a longer observation period")
    assert no_run_written(project / "out")
    assert (project / "out" / "2020-12-31.failed.log").is_file()


def test_failure_while_the_customer_table_is_written_in_the_background_fails_cleanly(project, monkeypatch):
    """customers.parquet is written in a second thread while the report is drawn; its failure is the run's."""
    assert cli("run", "run.yaml").exit_code == 0
    before = snapshot(project / "out")

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("forecast.batch.pipeline.write_customer_tables", disk_full)
    result = cli("run", "run.yaml", "--force")
    assert_clean_failure(result, "Writing the outputs to", "No space left on device", "Free disk space")
    assert snapshot(project / "out") == before
    assert sorted(p.name for p in (project / "out").iterdir() if p.name.startswith(".")) == []


def _limit_file_size() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.slow
def test_disk_full_fails_cleanly_and_keeps_the_previous_outputs(project):
    assert cli("run", "run.yaml").exit_code == 0
    before_out, before_models = snapshot(project / "out"), snapshot(project / "models")
    assert max(len(v) for v in before_out.values()) > 4096  # customers.csv cannot be written under the limit
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    child = subprocess.run(
        [sys.executable, "-m", "forecast.cli", "run", "run.yaml"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=300,
        check=False,
    )
    assert child.returncode == 2, child.stderr
    assert "Traceback" not in child.stderr
    message = " ".join(child.stderr.split())
    assert "Writing the outputs to" in message
    assert "Free disk space or choose another --output" in message
    assert snapshot(project / "out") == before_out
    # The model artifacts are written (atomically) before the outputs, so they may be replaced by the failed
    # run's refit of the same as_of; they must still be complete and loadable.
    assert snapshot(project / "models").keys() == before_models.keys()
    for name in before_models:
        load_model(project / "models" / name)
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".")) == []


#: The child's address space before it reaches the step where the test takes the rest away: ample for the run.
ADDRESS_SPACE_CAP = 6 << 30


def _cap_address_space() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


def _address_space(pid: int) -> int:
    """The bytes of address space a process has mapped (VmSize)."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads a process's size from /proc (Linux)")
def test_running_out_of_memory_is_a_paragraph_and_publishes_nothing(project):
    """A run under a real RLIMIT_AS runs out of memory: exit 2 with one paragraph naming the command, the step and
    what to do, no traceback, no run folder and no models published.

    Where a fixed limit bites depends on the machine (its libraries' address space, per-thread malloc arenas,
    Arrow's allocator reserving space in large blocks), and a limit that bites in DuckDB is DuckDB's own message
    (``ingest.duckdb_limits``). So the child starts under a generous cap (preexec_fn), and when it announces its
    CLV interval step (numpy arrays over 100,000 customers, after DuckDB is done) the test lowers its RLIMIT_AS to
    the address space it has then (``resource.prlimit``): its next new memory is refused. One malloc arena and
    Arrow's system allocator make the child take memory where numpy asks, the same way on every run.
    """
    write_simulated_log(project / "log.parquet", 100_000, end=dt.date(2021, 6, 30))
    (project / "run.yaml").write_text(
        "data: {path: log.parquet}\ntime_unit: week\nmargin: 0.5\nas_of: 2021-06-30\noutput: out\n"
        "models_dir: models\nduckdb: {threads: 1}\n",
        encoding="utf-8",
    )
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "MALLOC_ARENA_MAX": "1",
        "ARROW_DEFAULT_MEMORY_POOL": "system", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    }  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-m", "forecast.cli", "run", "run.yaml"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_cap_address_space,
    )  # fmt: skip
    assert child.stderr is not None
    announced = []
    for line in child.stderr:
        announced.append(line)
        if line.startswith("- Intervals from"):
            size = _address_space(child.pid)
            resource.prlimit(child.pid, resource.RLIMIT_AS, (size, size))
            break
    try:
        rest = child.communicate(timeout=120)[1]
    finally:
        if child.poll() is None:  # still running after the timeout (a hang): never left behind
            child.kill()
            child.wait()
    stderr = "".join(announced) + rest
    assert announced[-1].startswith("- Intervals from"), stderr
    assert child.returncode == 2, stderr
    assert "Traceback" not in stderr and "unexpected error" not in stderr, stderr
    message = " ".join(stderr.split())
    assert "error: `forecast run` ran out of memory at the step 'Intervals from 200 parameter draws' (" in message
    assert "MemoryError: Unable to allocate" in message
    assert "Nothing was written or replaced." in message
    for advice in ("Raise the memory limit of the process or container", "duckdb.memory_limit", "engine: spark"):
        assert advice in message
    assert no_run_written(project / "out")
    assert not (project / "models" / "2021-06-30").exists()


def _numpy_out_of_memory() -> Exception:
    return MemoryError("Unable to allocate 9.92 MiB for an array with shape (1300000,) and data type float64")


def _arrow_out_of_memory() -> Exception:
    from pyarrow.lib import ArrowMemoryError

    return ArrowMemoryError("malloc of size 8000000 failed")


def _duckdb_out_of_memory() -> Exception:
    import duckdb

    return duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate data of size 2.0 MiB")


def _error_while_handling_out_of_memory() -> Exception:
    """A RuntimeError raised while handling a MemoryError, as cleanup code failing after it would."""
    try:
        raise MemoryError("Unable to allocate 2.29 MiB for an array")
    except MemoryError:
        try:
            raise RuntimeError("cleanup failed") from None
        except RuntimeError as exc:
            return exc


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (_numpy_out_of_memory, "(MemoryError: Unable to allocate 9.92 MiB"),
        (_arrow_out_of_memory, "(ArrowMemoryError: malloc of size 8000000 failed)"),
        (_duckdb_out_of_memory, "(OutOfMemoryException: Out of Memory Error: failed to allocate"),
        (_error_while_handling_out_of_memory, "(MemoryError: Unable to allocate 2.29 MiB"),
    ],
    ids=["numpy", "arrow", "duckdb", "behind-another-error"],
)
def test_out_of_memory_from_any_library_is_a_paragraph_naming_the_step(project, monkeypatch, error, named):
    """Out of memory in numpy, Arrow or DuckDB (outside DuckDB's own checks), or behind an error raised while
    handling it, is the user-error paragraph (exit 2, --debug or not), naming the step last announced."""

    def exhausted(config, as_of, output, progress, force=False):
        progress("Summarising customers as of 2020-12-31")
        raise error()

    monkeypatch.setattr("forecast.batch.pipeline.run", exhausted)
    for debug in ([], ["--debug"]):
        result = cli(*debug, "run", "run.yaml")
        assert_clean_failure(
            result, "`forecast run` ran out of memory at the step 'Summarising customers as of 2020-12-31'", named,
            "Nothing was written or replaced", "use engine: spark",
        )  # fmt: skip
        assert "unexpected error" not in result.output


def test_rows_after_as_of_are_counted_in_the_manifest_and_by_validate(project):
    import json

    import pandas as pd

    log = pd.read_csv(project / "log.csv")
    after = int((pd.to_datetime(log["timestamp"]) >= "2020-10-01").sum())
    assert after > 0
    result = cli("run", "run.yaml", "--as-of", "2020-09-30")
    assert result.exit_code == 0, result.output
    manifest = json.loads((project / "out" / "2020-09-30" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["data_quality"]["after_as_of"] == after
    assert manifest["data_quality"]["as_of"] == "2020-09-30"
    assert f"{after:,} transactions after as_of 2020-09-30 were excluded." in manifest["warnings"]
    config = (project / "run.yaml").read_text(encoding="utf-8").replace("2020-12-31", "2020-09-30")
    (project / "early.yaml").write_text(config, encoding="utf-8")
    result = cli("validate", "early.yaml")
    assert result.exit_code == 0, result.output
    assert f"warning: {after:,} transactions after as_of 2020-09-30 were excluded." in result.output


@pytest.mark.parametrize(
    ("text", "encoding", "source"),
    [
        ("data: {path: log.csv}  # café\noutput: out\n", "cp1252", "CP1252"),
        ("data: {path: log.csv}\noutput: out\n", "utf-16", "UTF-16"),
    ],
)
def test_config_that_is_not_utf8_says_how_to_re_encode_it(project, text, encoding, source):
    (project / "run.yaml").write_bytes(text.encode(encoding))
    result = cli("run", "run.yaml")
    assert_clean_failure(result, "Config file run.yaml is not UTF-8 text", f"iconv -f {source} -t UTF-8 run.yaml")
    assert not (project / "out").exists()


def test_memory_limit_duckdb_refuses_is_a_config_error(project):
    (project / "run.yaml").write_text("data: {path: log.csv}\nduckdb: {memory_limit: lots}\n", encoding="utf-8")
    result = cli("validate", "run.yaml")
    assert_clean_failure(result, "'duckdb.memory_limit'", "'lots'", "'4GB'")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--as-of", "9999-12-31"], "--as-of 9999-12-31 is out of range"),
        (["--as-of", "1850-01"], "--as-of 1850-01-31 is out of range"),
        (["--as-of", "2020-11", "--through", "9999-12"], "--through 9999-12-31 is out of range"),
    ],
)
def test_dates_at_the_ends_of_the_calendar_are_refused(project, args, named):
    result = cli("run", "run.yaml", *args)
    assert_clean_failure(result, named, "from 1900-01-01 to 2999-12-31")
    assert not (project / "out").exists()


def test_dates_at_the_ends_of_the_calendar_are_refused_in_the_config_and_by_backtest(project):
    (project / "late.yaml").write_text("data: {path: log.csv}\nas_of: 9999-12-31\n", encoding="utf-8")
    assert_clean_failure(cli("run", "late.yaml"), "'as_of'", "from 1900-01-01 to 2999-12-31")
    result = cli("backtest", "run.yaml", "--calibration-end", "2020-06-30", "--holdout-end", "9999-12-31")
    assert_clean_failure(result, "--holdout-end 9999-12-31 is out of range")


def test_an_unexpected_error_is_one_paragraph_unless_debug(project, monkeypatch):
    def bug(*_args, **_kwargs):
        raise RuntimeError("something no one foresaw")

    monkeypatch.setattr("forecast.batch.pipeline.run", bug)
    result = cli("run", "run.yaml")
    assert_clean_failure(
        result, "unexpected error", "RuntimeError: something no one foresaw", "Re-run with --debug", "report it"
    )
    debugged = cli("--debug", "run", "run.yaml")
    assert debugged.exit_code == 1
    assert isinstance(debugged.exception, RuntimeError)


def test_an_interrupt_still_says_nothing_was_written(project, monkeypatch):
    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("forecast.batch.pipeline.run", interrupt)
    result = cli("run", "run.yaml")
    assert result.exit_code == 130
    assert "interrupted" in result.output and "Traceback" not in result.output


def test_version():
    from forecast import __version__

    result = cli("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"forecast {__version__}"
