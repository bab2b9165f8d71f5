"""A Spark standalone cluster on localhost for the tests: a master and workers started from the pyspark install.

pyspark's wheel carries ``bin/spark-class`` and every jar a standalone master and worker need (no download), but
not the ``sbin`` start scripts: the daemons are started with ``spark-class`` as those scripts would, each in its
own process group, bound to 127.0.0.1 on free ports, and stopped (with their executors) when the block ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
STARTUP_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(log: Path, text: str, count: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until ``text`` appears ``count`` times in a daemon's log; fail with the log's tail if it never does."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        content = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        if content.count(text) >= count:
            return
        if process.poll() is not None:
            break
        time.sleep(0.2)
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]) if log.exists() else ""
    raise RuntimeError(f"The standalone Spark daemon did not log {text!r} {count} time(s):\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a daemon and everything it started (a worker's executors) by its process group."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextmanager
def standalone_cluster(folder: Path, workers: int = 2, worker_memory: str = "1g") -> Iterator[str]:
    """Start a standalone master and ``workers`` one-core workers on 127.0.0.1; yield the master's URL.

    The daemons' logs and the workers' folders are in ``folder``. The master's REST submission server is off
    (clients connect to the master's own port).
    """
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(folder),
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=false",
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, arguments: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = folder / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [spark_class, *arguments], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                start_new_session=True,
            )  # fmt: skip
        started.append(process)
        return process, log

    try:
        master, master_log = start(
            "master",
            ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(free_port())],
        )  # fmt: skip
        _wait_for(master_log, "I have been elected leader", 1, master)
        for number in range(1, workers + 1):
            start(
                f"worker{number}",
                ["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
                 "--memory", worker_memory, "--webui-port", str(free_port()),
                 "--work-dir", str(folder / f"worker{number}")],
            )  # fmt: skip
        _wait_for(master_log, "Registering worker", workers, master)
        yield url
    finally:
        for process in reversed(started):
            _stop(process)
