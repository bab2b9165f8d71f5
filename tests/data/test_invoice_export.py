"""End to end: an invoice-line export configured with data settings gives the customers and CLV of the same data
pre-aggregated by hand in pandas (tests/data/invoice_export.py: the export, UCI "Online Retail II" shaped, and the
aggregation by hand).

Both go through the real `forecast run` in a child process; the per-customer outputs must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.data.invoice_export import EXCLUDED_CODES, aggregate_by_hand, write_invoice_export

ROOT = Path(__file__).resolve().parents[2]
AS_OF = "2011-11-30"
#: Columns of customers.parquet compared to 1e-9 relative; the counts and durations must be equal.
EXACT_COLUMNS = ["frequency", "recency", "T"]
CLOSE_COLUMNS = ["monetary_value", "revenue", "clv", "p_alive", "expected_purchases"]
#: data_quality fields that count the rows data.exclude left out and the returns that could not be netted (dropped
#: past the window, or in excess of their purchase day).
EXCLUDED_FIELD, UNMATCHED_FIELD, OVER_FIELD = "excluded_rows", "returns_without_purchase", "returns_over_purchase"


def run_settings(folder: Path) -> dict[str, object]:
    return {
        "as_of": AS_OF, "time_unit": "week", "horizon_months": 12, "monthly_discount_rate": 0.01, "margin": 1.0,
        "interval_draws": 0, "output": str(folder / "runs"), "models_dir": str(folder / "models"),
    }  # fmt: skip


def write_yaml(path: Path, document: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def forecast_run(config: Path, cwd: Path) -> Path:
    """`forecast run CONFIG` in a child process; the run folder it wrote."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "forecast.cli", "run", str(config)]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{config.name}: exit {done.returncode}\n{done.stderr[-3000:]}"
    print(f"{config.name}: {done.stdout.strip()}\n{done.stderr.strip()}")
    return Path(yaml.safe_load(config.read_text(encoding="utf-8"))["output"]) / AS_OF


def read_customers(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "customers.parquet")
    if "customer_id" not in frame.columns:
        frame = frame.reset_index()
    frame["customer_id"] = frame["customer_id"].astype(str)
    return frame.set_index("customer_id").sort_index()


@pytest.mark.slow
def test_an_invoice_export_configured_gives_the_customers_and_clv_of_the_same_data_aggregated_by_hand(
    tmp_path: Path,
) -> None:
    export = tmp_path / "online_retail.csv"
    write_invoice_export(export)
    hand, figures = aggregate_by_hand(export, tmp_path / "hand.csv")
    print(f"export and hand aggregation: {asdict(figures)}")

    configured = write_yaml(
        tmp_path / "configured" / "config.yaml",
        {
            "data": {
                "path": str(export), "customer_id": "Customer ID", "timestamp": "InvoiceDate", "amount": "Price",
                "quantity": "Quantity", "timestamp_format": "%m/%d/%Y %H:%M",
                "exclude": [{"column": "StockCode", "in": list(EXCLUDED_CODES)}],
                "negative_amounts": "net", "return_window_days": 90, "invalid_rows": "fail",
            },
            **run_settings(tmp_path / "configured"),
        },
    )  # fmt: skip
    by_hand = write_yaml(
        tmp_path / "by_hand" / "config.yaml",
        {"data": {"path": str(tmp_path / "hand.csv")}, **run_settings(tmp_path / "by_hand")},
    )
    configured_run, hand_run = forecast_run(configured, tmp_path), forecast_run(by_hand, tmp_path)

    quality = json.loads((configured_run / "manifest.json").read_text(encoding="utf-8"))["data_quality"]
    print("configured run's data_quality:", {k: v for k, v in quality.items() if k != "warnings"})

    tool, reference = read_customers(configured_run), read_customers(hand_run)
    assert len(reference) == figures.customers == hand["customer_id"].nunique()
    missing, extra = sorted(set(reference.index) - set(tool.index)), sorted(set(tool.index) - set(reference.index))
    assert not missing and not extra, f"customers only by hand: {missing[:10]}; only configured: {extra[:10]}"
    tool = tool.loc[reference.index]
    for column in EXACT_COLUMNS + CLOSE_COLUMNS:
        a, b = tool[column].to_numpy(dtype=float), reference[column].to_numpy(dtype=float)
        same = a == b if column in EXACT_COLUMNS else np.isclose(a, b, rtol=1e-9, atol=0.0)
        differ = tool.index[~same]
        examples = [(c, a[i], b[i]) for c, i in zip(differ[:5], np.flatnonzero(~same)[:5], strict=True)]
        assert differ.empty, f"{column} differs for {len(differ)} customers (id, configured, by hand): {examples}"
    assert tool["clv"].sum() == pytest.approx(reference["clv"].sum(), rel=1e-9, abs=0.0)
    assert reference["revenue"].sum() == pytest.approx(figures.total_revenue, rel=1e-9)

    expected = {
        EXCLUDED_FIELD: figures.excluded_lines,
        UNMATCHED_FIELD: figures.returns_past_window + figures.returns_without_earlier_purchase,
        OVER_FIELD: figures.days_below_zero,
    }
    assert {k: quality[k] for k in expected} == expected
