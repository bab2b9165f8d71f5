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
def backtest(
    config: ConfigArg,
    calibration_end: Annotated[
        dt.datetime | None,
        typer.Option("--calibration-end", help="Last calibration day (YYYY-MM-DD).", formats=["%Y-%m-%d"]),
    ] = None,
    holdout_end: Annotated[
        dt.datetime | None,
        typer.Option("--holdout-end", help="Last holdout day (YYYY-MM-DD).", formats=["%Y-%m-%d"]),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Fit on the calibration period, predict the holdout, score predictive vs heuristic vs gradient boosting."""
    from forecast.pipeline import backtest as run_backtest

    with user_errors(), progress_display() as say:
        done = run_backtest(
            load_config(config),
            calibration_end.date() if calibration_end else None,
            holdout_end.date() if holdout_end else None,
            output,
            say,
        )
    document = done.result.document
    for message in done.data_warnings + done.result.warnings:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)
    typer.echo(
        f"calibration to {document['calibration_end']}, holdout to {document['holdout_end']}: "
        f"{document['customers']:,} customers, actual holdout purchases {document['actual']['purchases']:,.0f}, "
        f"revenue {document['actual']['revenue']:,.2f}"
    )
    typer.echo(f"{'method':<18} {'purchases':>10} {'MAE':>7} {'RMSE':>7} {'revenue':>12} {'MAE':>8} {'RMSE':>8} "
               f"{'Spearman':>8} {'top20%':>7}")  # fmt: skip
    for name, m in document["methods"].items():
        spearman = "n/a" if m["spearman_revenue"] is None else f"{m['spearman_revenue']:.3f}"
        top = "n/a" if m["top20_capture"] is None else f"{m['top20_capture']:.1%}"
        typer.echo(
            f"{name:<18} {m['predicted_purchases']:>10,.0f} {m['mae_purchases']:>7.3f} {m['rmse_purchases']:>7.3f} "
            f"{m['predicted_revenue']:>12,.0f} {m['mae_revenue']:>8.2f} {m['rmse_revenue']:>8.2f} {spearman:>8} "
            f"{top:>7}"
        )
    winners = ", ".join(f"{metric} {name}" for metric, name in document["winner"].items())
    typer.echo(f"best: {winners}")
    comparison = document["model_comparison"]
    for name, entry in comparison.items():
        if "error" in entry:
            typer.echo(f"model {name}: not fitted ({entry['error']})")
        else:
            typer.echo(
                f"model {name:<7} LL {entry['log_likelihood']:,.2f}  BIC {entry['bic']:,.2f}  "
                f"holdout purchases {entry['predicted_purchases']:,.0f}  MAE {entry['mae_purchases']:.3f}"
            )
    typer.echo(f"outputs in {done.output}")


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


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
