"""Time the CLV intervals: CDNOW full (configs/cdnow.yaml) and a simulated customer base, with and without.

Usage: python benchmarks/intervals.py [SIMULATED_CUSTOMERS]   (default 1,000,000; 0 skips it)
Prints seconds per step and peak memory; nothing is asserted (figures live in benchmarks, never in timed tests).
"""

from __future__ import annotations

import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

from forecast.batch.pipeline import default_as_of, forecast
from forecast.config import DataConfig, load_config
from forecast.data.ingest import read_log
from forecast.data.simulate import write_simulated_log

ROOT = Path(__file__).resolve().parents[1]


def timed(label: str, config, transactions, as_of) -> None:
    started = time.perf_counter()
    result = forecast(config, transactions, as_of)
    seconds = time.perf_counter() - started
    whole = result.segments.iloc[0]
    print(
        f"{label}: {len(result.customers):,} customers, interval_draws {config.interval_draws}: {seconds:.1f} s; "
        f"CLV {whole['clv_total']:,.0f} [{whole['clv_lower_total']:,.0f}, {whole['clv_upper_total']:,.0f}]; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB",
        flush=True,
    )


def main() -> None:
    simulated = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    config = load_config(ROOT / "configs" / "cdnow.yaml")
    transactions = read_log(config)
    as_of = default_as_of(transactions)
    for draws in (0, 200):
        timed("CDNOW full", config.model_copy(update={"interval_draws": draws}), transactions, as_of)
    if simulated:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "log.parquet"
            rows = write_simulated_log(path, simulated, end=dt.date(2021, 6, 30), acquisition_days=365)
            print(f"simulated {simulated:,} customers, {rows:,} transactions", flush=True)
            data = DataConfig(path=str(path))
            base = config.model_copy(update={"data": data})
            transactions = read_log(base)
            for draws in (0, 200):
                settings = base.model_copy(update={"interval_draws": draws})
                timed("simulated", settings, transactions, dt.date(2021, 6, 30))


if __name__ == "__main__":
    main()
