"""Tests of forecast.report.build: the self-contained HTML report, rendered in a real headless Chromium.

The browser is driven through the Chrome DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON), so no extra Python package is needed. Chromium comes from the
Debian package ``chromium``, which scripts/test.sh installs.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image
from typer.testing import CliRunner

from forecast.cli import app
from forecast.errors import ArtifactError
from forecast.evaluation.log_queries import DuckDBLog
from forecast.models import BetaGeo, GammaGamma, ParetoNBD
from forecast.report.build import SECTIONS, build_report, period_transactions, read_report_run
from forecast.report.digest import CustomerDigest
from forecast.report.run_folder import read_models

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT_WIDTH = 1280
ALLOWED_SCHEMES = ("file:", "data:")


# --- a minimal DevTools-protocol client ------------------------------------------------------------------


class Chromium:
    """Headless Chromium with the DevTools protocol on a pipe; every event it sends is kept in ``events``."""

    def __init__(self, executable: Path = CHROMIUM) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_child_read, self._to_child = os.pipe()
        self._from_child, from_child_write = os.pipe()

        def wire_pipes() -> None:  # runs in the child: Chromium reads fd 3 and writes fd 4
            read_end = fcntl.fcntl(to_child_read, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_child_write, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        arguments = [
            str(executable), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={self.profile}",
            f"--window-size={VIEWPORT_WIDTH},900", "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            arguments, pass_fds=(3, 4), preexec_fn=wire_pipes, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_child_read)
        os.close(from_child_write)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe (did it start?)")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile go to ``events``."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Wait for an event (or return it if it already arrived)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + 60
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self.profile, ignore_errors=True)


DOM_PROBE = """JSON.stringify({
  headings: [...document.querySelectorAll('section > h2')].map(e => e.textContent.trim()),
  sections: [...document.querySelectorAll('main > section')].map(e => e.id),
  figures: [...document.querySelectorAll('figure.chart')].map(f => {
    const image = f.querySelector('svg, img');
    const box = image ? image.getBoundingClientRect() : {width: 0, height: 0};
    return {id: f.id, kind: image ? image.tagName.toLowerCase() : null, width: box.width, height: box.height,
            loaded: image && image.tagName === 'IMG' ? (image.complete && image.naturalWidth > 0) : true,
            caption: (f.querySelector('figcaption') || {}).textContent || ''};
  }),
  tables: document.querySelectorAll('table').length,
  scripts: document.querySelectorAll('script').length,
  text: document.body.innerText,
  height: document.documentElement.scrollHeight
})"""


def render_in_chromium(report: Path, screenshot: Path, height: int | None = None) -> dict[str, Any]:
    """Open a report in headless Chromium; return the DOM probe, the requested URLs and failed loads.

    Takes a PNG screenshot of the whole page (or of its top ``height`` pixels).
    """
    browser = Chromium()
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Network.enable", session=session)
        browser.send("Page.enable", session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": VIEWPORT_WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        browser.send("Page.navigate", {"url": report.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        probe = json.loads(
            browser.send("Runtime.evaluate", {"expression": DOM_PROBE, "returnByValue": True}, session=session)[
                "result"
            ]["value"]
        )
        clip = {"x": 0, "y": 0, "width": VIEWPORT_WIDTH, "height": height or probe["height"], "scale": 1}
        shot = browser.send(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}, session=session
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()
    requested = [
        e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"
    ]
    failed = [e["params"] for e in browser.events if e.get("method") == "Network.loadingFailed"]
    return {"probe": probe, "requested": requested, "failed": failed}


def assert_not_blank(png: Path, width: int) -> None:
    """The screenshot is a real picture: right width, many colours, not one colour almost everywhere."""
    image = Image.open(io.BytesIO(png.read_bytes())).convert("RGB")
    assert image.width == width
    pixels = np.asarray(image, dtype=np.uint32).reshape(-1, 3)
    packed = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    counts = np.bincount(packed)
    assert np.count_nonzero(counts) > 200
    assert counts.max() / len(packed) < 0.9


def assert_offline(html: str, rendered: dict[str, Any], report: Path) -> None:
    """Nothing points to or was fetched from anywhere but the report file itself (and inline data: URIs)."""
    assert not re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:|//|ftp:|ws:)""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:|//)", html, re.I)
    assert not re.search(r"@import|<script|<link|<iframe|<object|<embed", html, re.I)
    requested = rendered["requested"]
    assert requested and requested[0] == report.resolve().as_uri()
    assert all(url.startswith(ALLOWED_SCHEMES) for url in requested), requested
    assert [url for url in requested if url.startswith("file:")] == [report.resolve().as_uri()]
    assert rendered["failed"] == []


# --- fixtures --------------------------------------------------------------------------------------------


def require_chromium() -> None:
    if not CHROMIUM.exists():
        message = "Chromium is not installed: run scripts/test.sh as root, or apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# --- the model quantities the charts draw ----------------------------------------------------------------


def test_bgnbd_purchase_count_probabilities_match_a_simulation() -> None:
    """P(X(t) = n) for a new BG/NBD customer agrees with a direct simulation of the process.

    Parameters: Fader, Hardie & Lee (2005) CDNOW estimates r, alpha, a, b = 0.2426, 4.4136, 0.7929, 2.4259.
    Simulation: lambda ~ Gamma(r, rate alpha), p ~ Beta(a, b); X(t) = min(Poisson(lambda t), K), K ~ Geometric(p)
    (death right after the K-th repeat purchase), 400,000 customers, seed 7.
    """
    params = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}
    model = BetaGeo.from_dict(fitted("bgnbd", params))
    t = 39.0
    rng = np.random.default_rng(7)
    size = 400_000
    rate = rng.gamma(params["r"], 1 / params["alpha"], size)
    counts = np.minimum(rng.poisson(rate * t), rng.geometric(rng.beta(params["a"], params["b"], size)))
    for n in range(6):
        simulated = float(np.mean(counts == n))
        exact = float(model.probability_of_purchases(n, np.array([t]))[0])
        assert abs(simulated - exact) < 4 * np.sqrt(exact * (1 - exact) / size) + 1e-4


def test_pareto_purchase_count_probabilities_sum_to_one_with_the_closed_form_mean() -> None:
    """The integrated Pareto/NBD P(X(t) = n) sums to 1, and its mean equals lifetimes' closed-form E[X(t)].

    Parameters: Fader, Hardie & Lee (2005) Pareto/NBD CDNOW estimates r, alpha, s, beta = 0.553, 10.578, 0.606,
    11.669; E[X(t)] is Schmittlein, Morrison & Colombo (1987) as implemented in lifetimes.
    """
    model = ParetoNBD.from_dict(fitted("pareto", {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}))
    t = np.array([5.0, 39.0, 78.0])
    probabilities = np.array([model.probability_of_purchases(n, t) for n in range(150)])
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.arange(150) @ probabilities, model.expected_purchases_new(t), rtol=1e-6)


def test_average_spend_density_integrates_to_one_with_the_model_mean() -> None:
    """The Gamma-Gamma density of a customer's average spend integrates to 1 and has mean p gamma / (q - 1).

    Fader & Hardie (2013), eq. (3) and the mean below it; CDNOW estimates p, q, gamma = 6.25, 3.74, 15.44.
    """
    model = GammaGamma.from_dict(fitted("gamma_gamma", {"p": 6.25, "q": 3.74, "gamma": 15.44}))
    z = np.linspace(1e-4, 20_000, 2_000_001)
    density = model.average_spend_density(z, np.array([1, 1, 2, 5, 12]))
    assert np.trapezoid(density, z) == pytest.approx(1.0, abs=1e-4)
    assert np.trapezoid(z * density, z) == pytest.approx(model.mean_spend(), rel=1e-3)


def fitted(name: str, params: dict[str, float]) -> dict[str, Any]:
    return {
        "name": name, "params": params, "standard_errors": dict.fromkeys(params), "covariance_log_params": None,
        "log_likelihood": 0.0, "converged": True, "customers": 1, "unique_rows": 1,
    }  # fmt: skip


def test_period_transactions_counts_every_customer(sample_run: Path) -> None:
    """Actual and expected customers per repeat-purchase bucket both add up to all customers.

    The actual buckets are counted from customers.parquet; 1,411 CDNOW sample customers made no repeat
    purchase in weeks 1-39 (recomputed from CDNOW_sample.txt), and the BG/NBD expectation is within 2% of it.
    """
    folder = read_report_run(sample_run)
    purchases, _spend = read_models(folder)
    table = period_transactions(CustomerDigest.of_customers(folder.customers), purchases)
    assert list(table.index) == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert table["actual"].sum() == len(folder.customers) == 2357
    assert table["model"].sum() == pytest.approx(2357)
    assert table.loc["0", "actual"] == 1411
    assert table.loc["0", "model"] == pytest.approx(1411, rel=0.02)
    frequency = folder.customers["frequency"]
    assert table.loc["7+", "actual"] == (frequency >= 7).sum()


def test_report_from_the_in_memory_table_equals_the_report_from_the_file(run_copy: Path) -> None:
    """``forecast run`` passes its customer table (indexed by customer_id, with columns the file lacks) instead
    of having the report read customers.parquet back: the page is the same, byte for byte."""
    from_file = build_report(run_copy).read_text(encoding="utf-8")
    customers = pd.read_parquet(run_copy / "customers.parquet").set_index("customer_id")
    customers["first_purchase"] = pd.Timestamp("1997-01-01")
    (run_copy / "customers.parquet").unlink()  # proves the file is not read
    from_memory = build_report(run_copy, customers=customers).read_text(encoding="utf-8")
    assert from_memory == from_file


def test_importing_the_pipeline_loads_no_plotting_or_learning_library() -> None:
    """matplotlib is loaded when a chart is drawn and scikit-learn when gradient boosting runs, not on import."""
    code = "import sys, forecast.batch.pipeline; print(sorted({'matplotlib', 'sklearn'} & set(sys.modules)))"
    root = str(Path(__file__).resolve().parents[2])  # this checkout's forecast package, not an installed one
    environment = {**os.environ, "PYTHONPATH": root}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    assert result.stdout.strip() == "[]"


# --- the report in the browser ---------------------------------------------------------------------------


@pytest.mark.slow
def test_sample_run_report_renders_offline_in_chromium(sample_run: Path, tmp_path: Path) -> None:
    """The pipeline's report.html opens in headless Chromium with every section, chart and table, loads nothing
    from the network, and its screenshot is a real picture."""
    require_chromium()
    report = sample_run / "report.html"
    html = report.read_text(encoding="utf-8")
    rendered = render_in_chromium(report, tmp_path / "report.png")
    assert_offline(html, rendered, report)
    assert_not_blank(tmp_path / "report.png", VIEWPORT_WIDTH)
    probe = rendered["probe"]
    assert probe["headings"] == list(SECTIONS.values())
    assert probe["sections"] == list(SECTIONS)
    assert probe["scripts"] == 0
    names = [figure["id"] for figure in probe["figures"]]
    assert names == [
        "chart-period_transactions", "chart-heatmap_expected_purchases", "chart-heatmap_p_alive", "chart-spend_fit",
        "chart-frequency_spend", "chart-segment_clv_value_tier", "chart-segment_clv_rfm",
        "chart-segment_clv_cohort",
    ]  # fmt: skip
    for figure in probe["figures"]:
        assert figure["kind"] == "svg" and figure["width"] > 300 and figure["height"] > 200, figure
        assert figure["caption"].strip()
    # parameters, repeat purchases, per segmentation (tiers, RFM groups) segments and budget, data quality, about
    assert probe["tables"] == 10
    manifest = json.loads((sample_run / "manifest.json").read_text())
    text = probe["text"]
    assert f"{manifest['totals']['clv']:,.0f}" in text
    assert f"{manifest['totals']['clv_heuristic']:,.0f}" in text
    assert f"{manifest['comparison']['gap']:,.0f}" in text  # the gap on matched terms, not 3 years against 12 months
    assert "2,357" in text
    assert "Check passed" in text  # the sample's frequency-spend correlation is 0.114 (docs/reference.md)
    assert "No backtest in this run folder" in text
    assert "No previous run to compare with" in text
    assert "8 rows have an amount of 0" in text  # the data-quality warning of the manifest


def add_backtest(folder: Path) -> dict[str, Any]:
    """Write a backtest.json in the layout of the backtest step (issue 3), with an SVG and a PNG plot file.

    The figures are the CDNOW sample's (docs/reference.md, "Backtest"): 1,882 actual holdout purchases, BG/NBD MAE 0.786
    against 1.024 for the naive rate; the other numbers only need to be recognisable in the page.
    """
    figure = Figure(figsize=(4, 3))
    axes = figure.subplots()
    axes.plot([0, 1, 2], [0, 2, 1], label="actual")
    axes.set_title("tracking")
    figure.savefig(folder / "backtest_tracking.svg", format="svg")
    figure.savefig(folder / "backtest_conditional_expectation.png", format="png")
    deciles = [
        {"decile": d, "customers": 236, "predicted_revenue": 100.0 / d, "actual_revenue": 90.0 / d}
        for d in range(1, 11)
    ]
    methods = {
        name: {"predicted_purchases": purchases, "predicted_revenue": revenue, "mae_purchases": mae,
               "rmse_purchases": 2 * mae, "mae_revenue": 30 * mae, "rmse_revenue": 60 * mae,
               "spearman_revenue": rho, "top20_capture": capture, "deciles": deciles}
        for name, purchases, revenue, mae, rho, capture in (
            ("predictive", 1653.4, 59932.0, 0.786, 0.43, 0.663), ("heuristic", 2930.0, 115522.0, 1.024, 0.48, 0.671)
        )
    }  # fmt: skip
    document = {
        "calibration_end": "1997-09-30", "holdout_end": "1998-06-30", "customers": 2357, "time_unit": "week",
        "actual": {"purchases": 1882.0, "revenue": 70976.0, "top20_capture": 0.943}, "methods": methods,
        "winner": {"mae_purchases": "predictive", "rmse_purchases": "predictive", "mae_revenue": "predictive",
                   "rmse_revenue": "predictive", "spearman_revenue": "heuristic", "top20_capture": "heuristic"},
        "purchase_model": {"configured": "bgnbd", "used": "bgnbd"},
        "model_comparison": {
            "bgnbd": {"bic": 19195.9, "log_likelihood": -9582.43, "mae_purchases": 0.786, "params": {"r": 0.24}},
            "pareto": {"bic": 19221.0, "log_likelihood": -9594.98, "mae_purchases": 0.755, "params": {"r": 0.55}},
        },
        "plots": {"tracking": "backtest_tracking.svg", "escape": "../outside.svg",
                  "conditional_expectation": "backtest_conditional_expectation.png"},
        "warnings": ["The gradient-boosting baseline was skipped: too few customers."],
    }  # fmt: skip
    (folder / "backtest.json").write_text(json.dumps(document))
    return document


def add_drift_and_budget(folder: Path) -> pd.DataFrame:
    """Add a drift entry to the manifest (layout of the batch step, issue 4) and interval and budget columns to
    segments.csv (layout of the budget step, issue 5); return the new segment table."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["ci_level"] = 0.9
    manifest["config"]["budget"] = {"target_ltv_to_cac": 3.0, "p_alive_threshold": 0.3}
    change = {"previous": 0.25, "current": 0.2426, "change": -0.0074, "relative_change": -0.0296,
              "se_previous": 0.013, "se_current": 0.0126, "z": -0.41}  # fmt: skip
    manifest["drift"] = {
        "previous_as_of": "1997-08-31", "as_of": "1997-09-30", "days_apart": 30,
        "parameters": {"purchases": {"model": "bgnbd", "previous_model": "bgnbd", "comparable": True,
                                     "params": {"r": change}}},
        "totals": {"clv": {"previous": 22699.5, "current": 21465.0, "change": -1234.5, "relative_change": -0.0544}},
        # "segment": the value tiers as runs before the rename to value_tier labelled them; still drawn.
        "segments": [{"segmentation": "segment", "segment": tier, "customers_previous": 10, "customers_current": 11,
                      "clv_previous": 1000.0 * (i + 1), "clv_current": 1100.0 * (i + 1), "clv_change": 100.0 * (i + 1),
                      "clv_relative_change": 0.1} for i, tier in enumerate(["top 1%", "next 4%", "next 15%", "rest"])],
        "tiers": {"labels_from": ["top 1%", "rest"], "labels_to": ["top 1%", "rest"], "counts": [[20, 4], [3, 1800]],
                  "moved": 7, "moved_up": 3, "moved_down": 4, "stayed": 1820},
        "customers": {"new": 0, "lapsed": 41, "missing": 0},
        "warnings": ["Total predictive CLV changed by -5% since the run as of 1997-08-31."],
    }  # fmt: skip
    segments = pd.read_csv(folder / "segments.csv")
    manifest["totals"]["clv_lower"] = float(segments["clv_total"].iloc[0] * 0.9)
    manifest["totals"]["clv_upper"] = float(segments["clv_total"].iloc[0] * 1.1)
    manifest["intervals"] = {"level": 0.9, "totals": "predictive", "customers": "parameters"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    segments["clv_lower_total"] = segments["clv_total"] * 0.9
    segments["clv_upper_total"] = segments["clv_total"] * 1.1
    segments["new_customer_clv"] = 12.5
    segments["new_customer_clv_lower"] = 11.0
    segments["new_customer_clv_upper"] = 14.0
    segments["max_acquisition_cost"] = 4.17
    segments["customers_at_risk"] = 7
    segments["value_at_risk"] = segments["clv_total"] * 0.2
    segments.to_csv(folder / "segments.csv", index=False)
    return segments


@pytest.mark.slow
def test_report_shows_backtest_drift_intervals_and_budget_when_present(run_copy: Path, tmp_path: Path) -> None:
    """With backtest.json and its plot files, a drift entry in the manifest, and interval and budget columns in
    segments.csv, the report shows them all: metrics, winner, plots, model comparison, drift, budget table."""
    require_chromium()
    add_backtest(run_copy)
    segments = add_drift_and_budget(run_copy)
    report = build_report(run_copy)
    rendered = render_in_chromium(report, tmp_path / "report.png", height=1600)
    assert_offline(report.read_text(encoding="utf-8"), rendered, report)
    assert_not_blank(tmp_path / "report.png", VIEWPORT_WIDTH)
    probe = rendered["probe"]
    assert probe["headings"] == list(SECTIONS.values())
    figures = {figure["id"]: figure for figure in probe["figures"]}
    for name in ("chart-tracking", "chart-conditional_expectation"):
        assert figures[name]["kind"] == "img" and figures[name]["loaded"] and figures[name]["width"] > 300
    assert "chart-backtest_deciles" in figures  # drawn from the decile tables: no decile plot file was given
    assert "chart-drift_segments" in figures
    assert "chart-escape" not in figures
    text = probe["text"]
    assert "Winner: predictive (predictive on 4 of 6 metrics, heuristic on 2 of 6 metrics)" in text
    assert "0.786" in text and "1.02" in text and "66.3%" in text and "1,882" in text
    assert "Purchase models fitted on the whole calibration period" in text and "19,196" in text
    assert "../outside.svg is not an .svg or .png file in the run folder" in text
    assert "The gradient-boosting baseline was skipped" in text
    assert "Total predictive CLV changed by -5% since the run as of 1997-08-31." in text
    assert "-5.4%" in text and "Customers moving between value tiers" in text and "Lapsed customers" in text
    everyone = segments[segments["segmentation"] == "all"].iloc[0]
    interval = f"{everyone['clv_lower_total']:,.0f} – {everyone['clv_upper_total']:,.0f}"
    # The headline card, naming what the interval covers (the manifest's intervals.totals).
    assert f"90% predictive interval (the customers' own randomness and the parameters' uncertainty) {interval}" in text
    assert "where the realised total should fall" in text
    assert f"{everyone['clv_total']:,.0f} ({interval})" in text  # the segment table
    assert "Max acquisition cost" in text and "4.17" in text and "12.50 (11.00 – 14.00)" in text
    assert "ratio of 3.00" in text and "Value at risk" in text
    for absent in ("No backtest in this run folder", "No previous run", "no interval in this run",
                   "No acquisition ceilings", "No value-at-risk"):  # fmt: skip
        assert absent not in text


def test_report_says_which_purchase_model_the_run_uses_and_why(run_copy: Path) -> None:
    """With the run's model validation in the manifest (``model_selection``: BG/NBD configured, every model scored
    on the 90 days before as_of), the backtest section names the model, the reason and every model's score, also
    without a backtest; a backtest.json written before the overall winner existed still gets its winner by metrics
    won."""
    import datetime as dt

    from forecast.config import load_config
    from forecast.data.ingest import read_transactions
    from forecast.evaluation.selection import select_purchase_model
    from tests.conftest import CONFIGS

    config = load_config(CONFIGS / "cdnow_sample.yaml")
    checked = config.model_selection.model_copy(update={"check_configured": True})
    config = config.model_copy(update={"model_selection": checked})
    con = read_transactions(config.data).connection
    selection = select_purchase_model(DuckDBLog(con), config, dt.date(1997, 9, 30)).document()
    manifest = json.loads((run_copy / "manifest.json").read_text())
    (run_copy / "manifest.json").write_text(json.dumps({**manifest, "model_selection": selection}))
    html = build_report(run_copy).read_text(encoding="utf-8")
    assert "Which purchase model this run uses, and why" in html
    assert "This run uses bgnbd (configured; checked by a validation on the data up to 1997-09-30)" in html
    for name, entry in selection["scores"].items():
        assert f"<td>{name}</td>" in html and f"{entry['per_1000_customers']:,.1f}" in html
    document = add_backtest(run_copy)
    assert "overall_winner" not in document
    html = build_report(run_copy).read_text(encoding="utf-8")
    assert "Winner: predictive (predictive on 4 of 6 metrics" in html and "This run uses bgnbd" in html
    (run_copy / "manifest.json").write_text(json.dumps({**manifest, "model_selection": None}))
    assert "Which purchase model this run uses" not in build_report(run_copy).read_text(encoding="utf-8")


@pytest.mark.slow
def test_offline_checks_catch_an_external_image(sample_run: Path, tmp_path: Path) -> None:
    """The offline checks are not vacuous: a page with one external image fails both the HTML check and the
    browser's request log (the host name resolves to nothing, so no traffic leaves the machine)."""
    require_chromium()
    html = (sample_run / "report.html").read_text(encoding="utf-8")
    tampered = tmp_path / "tampered.html"
    tampered.write_text(html.replace("</main>", '<img src="http://tracker.example.invalid/pixel.png"></main>'))
    rendered = render_in_chromium(tampered, tmp_path / "tampered.png", height=400)
    assert "http://tracker.example.invalid/pixel.png" in rendered["requested"]
    with pytest.raises(AssertionError):
        assert_offline(tampered.read_text(encoding="utf-8"), rendered, tampered)
    with pytest.raises(AssertionError):
        assert_offline(html, rendered, tampered)  # the browser's log alone is enough to fail


# --- edge cases and the CLI ------------------------------------------------------------------------------


def test_correlated_frequency_and_spend_shows_a_warning(run_copy: Path) -> None:
    """When repeat buyers' average spend grows with their frequency (r well above 0.3), the report warns."""
    customers = pd.read_parquet(run_copy / "customers.parquet")
    repeat = customers["frequency"] > 0
    customers.loc[repeat, "monetary_value"] = 10.0 + 5.0 * customers.loc[repeat, "frequency"]
    customers.to_parquet(run_copy / "customers.parquet", index=False)
    html = build_report(run_copy).read_text(encoding="utf-8")
    assert "Warning: the spend model's assumption does not hold" in html
    assert "Check passed" not in html


def test_report_without_segments_or_models_still_renders(run_copy: Path) -> None:
    """A run folder without segments.csv and with unreadable models renders every section and says what is missing."""
    (run_copy / "segments.csv").unlink()
    manifest = json.loads((run_copy / "manifest.json").read_text())
    del manifest["models"]
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    html = build_report(run_copy).read_text(encoding="utf-8")
    for section_id, heading in SECTIONS.items():
        assert f'<section id="{section_id}">' in html and heading in html
    assert "The manifest has no fitted models" in html
    assert "no segment table" in html
    assert "segments.csv is missing from the run folder." in html


def test_build_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    """A missing folder, or one without manifest.json, is an ArtifactError that says what to do."""
    with pytest.raises(ArtifactError, match="does not exist"):
        build_report(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match=r"no manifest\.json.*forecast run"):
        build_report(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        build_report(tmp_path)


def test_cli_report_rebuilds_the_report(run_copy: Path, tmp_path: Path) -> None:
    """`forecast report RUN_DIR` rewrites report.html; on a folder that is not a run it exits 2 with a message."""
    (run_copy / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(run_copy)])
    assert result.exit_code == 0, result.output
    assert (run_copy / "report.html").is_file()
    assert str(run_copy / "report.html") in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
