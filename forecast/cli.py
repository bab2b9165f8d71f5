"""The `forecast` command: the only place that prints or exits."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from forecast.config import load_config
from forecast.errors import ForecastError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Customer-lifetime-value forecasts.")
console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML run configuration, e.g. configs/cdnow.yaml.")]
AsOfOption = Annotated[
    dt.datetime | None, typer.Option("--as-of", help="Observation end (YYYY-MM-DD), inclusive.", formats=["%Y-%m-%d"])
]
OutputOption = Annotated[Path | None, typer.Option("--output", help="Output folder (default: the config's output).")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into a one-paragraph message and exit code 2, without a traceback."""
    try:
        yield
    except ForecastError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[bold red]interrupted:[/] no output was written or replaced.")
        raise typer.Exit(code=130) from None


@contextmanager
def progress_display() -> Iterator[Callable[[str], None]]:
    """A spinner showing the current step (quiet when stderr is not a terminal)."""
    if not console.is_terminal:
        yield lambda message: console.print(f"- {message}", highlight=False)
        return
    with console.status("Starting") as status:
        yield lambda message: status.update(message)


@app.command()
def run(config: ConfigArg, as_of: AsOfOption = None, output: OutputOption = None) -> None:
    """Run the monthly batch: summary, model fits, per-customer and per-segment CLV, manifest."""
    from forecast.pipeline import run as run_pipeline

    with user_errors(), progress_display() as say:
        result = run_pipeline(load_config(config), as_of.date() if as_of else None, output, say)
    totals = result.manifest["totals"]
    for message in result.forecast.warnings:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)
    interval = ""
    if totals.get("clv_lower") is not None:
        level = result.manifest["config"]["ci_level"]
        interval = f" ({level:.0%} interval {totals['clv_lower']:,.0f} to {totals['clv_upper']:,.0f})"
    typer.echo(
        f"as_of {result.forecast.as_of}: {len(result.forecast.customers):,} customers, predictive CLV "
        f"{totals['clv']:,.0f}{interval}, heuristic CLV {totals['clv_heuristic']:,.0f}; outputs in {result.output}, "
        f"models in {result.models}"
    )


@app.command()
def validate(config: ConfigArg) -> None:
    """Check the config and the data without fitting; print a data-quality summary."""
    from forecast.ingest import count_after_as_of, read_transactions

    with user_errors():
        settings = load_config(config)
        transactions = read_transactions(settings.data)
        quality = (count_after_as_of(transactions, settings.as_of) if settings.as_of else transactions).quality
    typer.echo(
        f"{config}: valid. {quality.rows:,} rows, {quality.customers:,} customers, "
        f"{quality.first_timestamp} .. {quality.last_timestamp}."
    )
    for message in quality.warnings:
        typer.echo(f"warning: {message}")


@app.command()
def budget(
    config: ConfigArg,
    cac: Annotated[float, typer.Option("--cac", help="Acquisition cost per customer (currency).")],
    as_of: AsOfOption = None,
) -> None:
    """At an acquisition cost per customer, which segments pay back, and in how many months."""
    from forecast.pipeline import budget as budget_pipeline

    with user_errors(), progress_display() as say:
        settings = load_config(config)
        result, table = budget_pipeline(settings, cac, as_of.date() if as_of else None, say)
    for message in result.warnings:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)
    typer.echo(
        f"as_of {result.as_of}: a new customer acquired at {cac:,.2f}, margin {settings.margin:g}, "
        f"{settings.horizon_months} months at {settings.monthly_discount_rate:.2%} a month; "
        f"target LTV:CAC {settings.budget.target_ltv_to_cac:g}"
    )
    typer.echo(
        f"{'segmentation':<14} {'segment':<16} {'customers':>9} {'new CLV':>9} {'max CAC':>9} {'LTV:CAC':>7}  payback"
    )
    for row in table.itertuples(index=False):
        payback = f"month {row.payback_month}" if row.pays_back else f"not within {settings.horizon_months} months"
        typer.echo(
            f"{row.segmentation:<14.14} {row.segment:<16.16} {row.customers:>9,} {row.new_customer_clv:>9,.2f} "
            f"{row.max_acquisition_cost:>9,.2f} {row.ltv_to_cac:>7.2f}  {payback}"
        )


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
