"""Benchmark `forecast run` against a lifetimes-only pipeline on the same simulated Parquet logs.

Each pipeline runs in its own child process; wall time, CPU time and peak resident memory (max RSS from
``os.wait4``, the kernel's figure for that one child) are measured from outside. Logs are simulated once
per size with ``forecast simulate`` (BG/NBD + Gamma-Gamma, ~2.94 transactions per customer) and reused.

The figures are printed as they come and, once every size has run, written to the repository's one current
results file: ``benchmarks/results.txt`` (what was printed) and ``benchmarks/results.json`` (the figures with
every run), replacing the previous ones. ``--out PREFIX`` writes ``PREFIX.txt`` and ``PREFIX.json`` instead;
``--out ""`` writes no file. docs/performance.md quotes the figures of the current files.

Usage (from the repository root)::

    python benchmarks/benchmark.py --repeat 3            # the full run: 1M and 10M both pipelines, 100M forecast only
    python benchmarks/benchmark.py --compare 20k --forecast-only "" --out ""   # a tiny run (CI), no file written
    python benchmarks/benchmark.py --compare 10m --forecast-only "" --repeat 3 --out /tmp/10m   # medians of 3
    python benchmarks/benchmark.py --engine spark --compare "" --forecast-only 1m --out /tmp/spark

The lifetimes-only pipeline is what a user of lifetimes 0.11.3 writes: pandas.read_parquet, then
``summary_data_from_transaction_data`` (days, expressed in weeks), BetaGeoFitter and GammaGammaFitter
fitted on every customer row, and ``GammaGammaFitter.customer_lifetime_value`` for 12 months with
``freq="W"`` (the model's unit), at a 1% monthly discount rate.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # the one current results file: results.txt and results.json
AS_OF = dt.date(2021, 6, 30)
TRANSACTIONS_PER_CUSTOMER = 2.94  # the simulator's default parameters give about 2.94 rows per customer
SUFFIXES = {"k": 1_000, "m": 1_000_000}


def parse_size(text: str) -> int:
    """'1m' -> 1,000,000 transactions; '20k' -> 20,000; '2500' -> 2,500."""
    text = text.strip().lower()
    factor = SUFFIXES.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in SUFFIXES else text
    return int(float(number) * factor)


def simulated_log(size: str, data_dir: Path, seed: int) -> tuple[Path, float | None]:
    """The simulated log for a size, written once (returns its path and the simulation time, None if cached)."""
    path = data_dir / f"sim_{size}_seed{seed}.parquet"
    if path.exists():
        return path, None
    customers = max(10, round(parse_size(size) / TRANSACTIONS_PER_CUSTOMER))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "forecast.cli", "simulate", str(path), "--customers", str(customers), "--seed",
         str(seed), "--end", AS_OF.isoformat()],
        check=True, cwd=ROOT,
    )  # fmt: skip
    return path, time.perf_counter() - started


def measure(command: list[str], cwd: Path) -> dict[str, Any]:
    """Run a command as a child; return its wall seconds, CPU seconds (user + system) and peak RSS in MB.

    The peak RSS is the kernel's figure for that one child (``os.wait4``), so the children of one
    benchmark run do not mix. The child's last stdout line, if JSON, is kept as its stage timings.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}:\n{stderr[-3000:]}")
    figures: dict[str, Any] = {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    lines = stdout.strip().splitlines()
    if lines:
        with contextlib.suppress(json.JSONDecodeError):
            figures["stages"] = json.loads(lines[-1])
    return figures


def forecast_command(path: Path, work: Path, engine: str, interval_draws: int) -> tuple[list[str], Path]:
    """The `forecast run` command for a log, and the run folder it writes."""
    name = f"{path.stem}_{engine}_draws{interval_draws}"
    config = work / f"{name}.yaml"
    config.write_text(
        f"data:\n  path: {path}\nas_of: {AS_OF.isoformat()}\ntime_unit: week\nhorizon_months: 12\n"
        f"monthly_discount_rate: 0.01\ninterval_draws: {interval_draws}\nengine: {engine}\n"
        f"output: {work / ('run_' + name)}\nmodels_dir: {work / 'models'}\n",
        encoding="utf-8",
    )
    run_dir = work / f"run_{name}" / AS_OF.isoformat()
    return [sys.executable, "-m", "forecast.cli", "run", str(config), "--force"], run_dir


def lifetimes_pipeline(path: Path) -> dict[str, float]:
    """The lifetimes-only pipeline (runs in the child); returns its stage timings in seconds."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd
        from lifetimes import BetaGeoFitter, GammaGammaFitter
        from lifetimes.utils import summary_data_from_transaction_data

    timings: dict[str, float] = {}
    step = time.perf_counter()
    log = pd.read_parquet(path)
    timings["read"] = time.perf_counter() - step
    step = time.perf_counter()
    summary = summary_data_from_transaction_data(
        log, "customer_id", "timestamp", monetary_value_col="amount",
        observation_period_end=pd.Timestamp(AS_OF), freq="D", freq_multiplier=7,
    )  # fmt: skip
    timings["summary"] = time.perf_counter() - step
    step = time.perf_counter()
    bgf = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
    timings["fit_bgnbd"] = time.perf_counter() - step
    step = time.perf_counter()
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    timings["fit_gamma_gamma"] = time.perf_counter() - step
    step = time.perf_counter()
    clv = ggf.customer_lifetime_value(
        bgf, summary["frequency"], summary["recency"], summary["T"], summary["monetary_value"],
        time=12, discount_rate=0.01, freq="W",
    )  # fmt: skip
    timings["clv"] = time.perf_counter() - step
    timings["customers"] = float(len(clv))
    timings["clv_total"] = float(clv.sum())
    return timings


def machine() -> str:
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {memory_gb:.0f} GB RAM, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", default="1m,10m", help="Sizes for both pipelines, e.g. 1m,10m ('' for none).")
    parser.add_argument("--forecast-only", default="100m", help="Sizes for forecast run alone ('' for none).")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "data", help="Simulated logs.")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "work", help="Configs and outputs.")
    parser.add_argument("--engine", default="duckdb", choices=["duckdb", "spark"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--interval-draws",
        default="200,0",
        help="forecast run once per value of interval_draws (200: the default config, with intervals; 0: none).",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Runs of every pipeline at each --compare size, taken in turn; the figures are their medians "
        "(timings on a shared machine vary by 10-15%%). --forecast-only sizes run once.",
    )
    parser.add_argument(
        "--out",
        default=str(RESULTS),
        help="Write what is printed to OUT.txt and the figures with every run to OUT.json once all sizes have run "
        "(default: benchmarks/results, the repository's current results file); '' writes no file.",
    )
    parser.add_argument("--lifetimes-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.lifetimes_child is not None:
        print(json.dumps(lifetimes_pipeline(args.lifetimes_child)))
        return

    compare = [s for s in args.compare.split(",") if s.strip()]
    alone = [s for s in args.forecast_only.split(",") if s.strip()]
    # An installed package is byte-compiled (pip compiles it); an editable checkout may not be, for example with
    # PYTHONDONTWRITEBYTECODE set. Compiled here, so that no measured run spends its time compiling our modules.
    compileall.compile_dir(ROOT / "forecast", quiet=1)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    results = []
    for size in compare + alone:
        path, simulated = simulated_log(size, args.data_dir, args.seed)
        rows = _parquet_rows(path)
        note = f" (simulated in {simulated:.1f} s)" if simulated is not None else ""
        say(f"\n== {size}: {rows:,} transactions, {path.stat().st_size / 2**20:,.0f} MB Parquet{note}")
        entry: dict[str, object] = {"size": size, "rows": rows, "simulate_s": simulated}
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(max(args.repeat, 1) if size in compare else 1):
            for draws in (int(d) for d in args.interval_draws.split(",") if d.strip()):
                command, run_dir = forecast_command(path, args.work_dir, args.engine, draws)
                figures = measure(command, ROOT)
                manifest = run_dir / "manifest.json"
                if manifest.exists():
                    figures["stages"] = json.loads(manifest.read_text(encoding="utf-8")).get("timings_seconds", {})
                runs.setdefault(f"forecast_draws{draws}", []).append(figures)
            if size in compare:
                child = [sys.executable, str(Path(__file__).resolve()), "--lifetimes-child", str(path)]
                runs.setdefault("lifetimes", []).append(measure(child, ROOT))
        for key, measured in runs.items():
            entry[key] = medians(measured)
            name = (
                "lifetimes-only"
                if key == "lifetimes"
                else f"forecast run, interval_draws {key.removeprefix('forecast_draws')}"
            )
            say(_line(name, entry[key]))
        theirs = entry.get("lifetimes")
        if isinstance(theirs, dict):
            for key, ours in entry.items():
                if key.startswith("forecast_draws") and isinstance(ours, dict):
                    say(
                        f"   ratios ({key}): lifetimes / forecast wall time {theirs['wall_s'] / ours['wall_s']:.1f}x, "
                        f"CPU time {theirs['cpu_s'] / ours['cpu_s']:.1f}x; forecast peak memory is "
                        f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.0%} of lifetimes' (at most "
                        f"{ours['peak_rss_mb_max'] / theirs['peak_rss_mb_min']:.0%}: our largest peak against their "
                        "smallest)"
                    )
        results.append(entry)
    if args.out:
        _write(Path(f"{args.out}.txt"), "\n".join(lines) + "\n")
        _write(Path(f"{args.out}.json"), json.dumps({"machine": machine(), "results": results}, indent=2))
        print(f"\nresults written to {args.out}.txt and {args.out}.json")


def _write(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, so an interrupted write never leaves half a results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median wall time, CPU time and peak memory of repeated runs, their ranges, and every run.

    The stage timings shown are those of the run with the median wall time (the lower middle one of an even
    number of runs).
    """
    middle = sorted(runs, key=lambda run: run["wall_s"])[(len(runs) - 1) // 2]
    figures: dict[str, Any] = {
        name: statistics.median(run[name] for run in runs) for name in ("wall_s", "cpu_s", "peak_rss_mb")
    }
    figures.update(
        wall_s_min=min(run["wall_s"] for run in runs),
        wall_s_max=max(run["wall_s"] for run in runs),
        peak_rss_mb_min=min(run["peak_rss_mb"] for run in runs),
        peak_rss_mb_max=max(run["peak_rss_mb"] for run in runs),
        runs=runs,
    )
    if "stages" in middle:
        figures["stages"] = middle["stages"]
    return figures


def _line(name: str, figures: dict[str, Any]) -> str:
    stages = figures.get("stages")
    detail = ""
    if isinstance(stages, dict):
        shown = {k: v for k, v in stages.items() if k not in ("customers", "clv_total", "total")}
        detail = "  [" + ", ".join(f"{k} {v:.1f}" for k, v in shown.items()) + "]"
    spread = ""
    if len(figures.get("runs", [])) > 1:
        spread = (
            f" (median of {len(figures['runs'])}: wall {figures['wall_s_min']:.1f}-{figures['wall_s_max']:.1f} s, "
            f"peak {figures['peak_rss_mb_min']:,.0f}-{figures['peak_rss_mb_max']:,.0f} MB)"
        )
    return (
        f"   {name:15s} wall {figures['wall_s']:7.1f} s  CPU {figures['cpu_s']:7.1f} s  "
        f"peak RSS {figures['peak_rss_mb']:7,.0f} MB{detail}{spread}"
    )


if __name__ == "__main__":
    main()
