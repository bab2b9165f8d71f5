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
    typer.echo(
        f"as_of {result.forecast.as_of}: {len(result.forecast.customers):,} customers, predictive CLV "
        f"{totals['clv']:,.0f}, heuristic CLV {totals['clv_heuristic']:,.0f}; outputs in {result.output}, "
        f"models in {result.models}"
    )


@app.command()
def validate(config: ConfigArg) -> None:
    """Check the config and the data without fitting; print a data-quality summary."""
    from forecast.ingest import read_transactions

    with user_errors():
        settings = load_config(config)
        quality = read_transactions(settings.data).quality
    typer.echo(
        f"{config}: valid. {quality.rows:,} rows, {quality.customers:,} customers, "
        f"{quality.first_timestamp} .. {quality.last_timestamp}."
    )
    for message in quality.warnings:
        typer.echo(f"warning: {message}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder written by `forecast run`.")]) -> None:
    """Rebuild report.html in a run folder from its files (after a backtest, or to refresh the charts)."""
    from forecast.report import build_report

    with user_errors():
        path = build_report(run_dir)
    typer.echo(f"report written to {path}")


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
