"""A retail invoice-line export shaped like UCI "Online Retail II", and its aggregation by hand in pandas.

``write_invoice_export`` writes a deterministic CSV (numpy Generator, fixed seed) with the columns
Invoice, StockCode, Description, Quantity, InvoiceDate, Price, Customer ID, Country: about 1,500 customers over
2010-12-01 .. 2011-11-30 who buy BG/NBD-like (a Poisson rate while alive, a chance to stop after each purchase),
1-6 lines per invoice, InvoiceDate as '12/01/2010 08:26', Customer ID as '13085.0' (blank on guest orders), postage,
manual and bank-charge lines (POST, M, BANK CHARGES: not products), and cancellations ('C' invoices, negative
Quantity) after the customer's purchases: mostly within 60 days, a few more than 90 days after the last purchase,
a few cancelling more than the purchase day they follow, and some on the purchase's day but before it.

``aggregate_by_hand`` is what a user would do without the tool's data settings: drop the excluded stock codes and
the guest lines, net each return into the customer's most recent purchase day on or before it (calendar days) when
that day is at most ``return_window_days`` before it (else drop it), floor a day's total at 0, and write one row per
customer and purchase day. Amounts are summed in integer cents, so the hand figures are exact.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
START, END = dt.date(2010, 12, 1), dt.date(2011, 11, 30)
DAYS = (END - START).days + 1
EXCLUDED_CODES = ("POST", "M", "BANK CHARGES")
TIMESTAMP_FORMAT = "%m/%d/%Y %H:%M"
COUNTRIES = ["United Kingdom", "Germany", "France", "EIRE", "Spain", "Netherlands", "Belgium", "Switzerland"]
COUNTRY_SHARES = [0.84, 0.04, 0.04, 0.03, 0.015, 0.015, 0.01, 0.01]
FIRST_INVOICE = 489434

_ADJECTIVES = ["WHITE", "RED", "PINK", "BLUE", "VINTAGE", "REGENCY", "JUMBO", "SET OF 3", "RETRO", "HEART OF"]
_NOUNS = ["HANGING HEART T-LIGHT HOLDER", "CAKE TINS, PANTRY DESIGN", "LUNCH BAG", "BUNTING", "TEACUP AND SAUCER",
          "GLASS STAR FROSTED", "NIGHT LIGHT", "CHILDRENS APRON", "DOORMAT", "ALARM CLOCK BAKELIKE"]  # fmt: skip
_SPECIAL = {"POST": "POSTAGE", "M": "Manual", "BANK CHARGES": "Bank Charges"}


@dataclass
class Line:
    invoice: int
    code: str
    description: str
    quantity: int
    moment: dt.datetime
    cents: int
    customer: int | None
    country: str


@dataclass
class Invoice:
    """One invoice before numbering: its moment, customer (None for a guest), and lines (code, qty, cents)."""

    moment: dt.datetime
    customer: int | None
    country: str
    cancel: bool = False
    lines: list[tuple[str, int, int]] = field(default_factory=list)


def _catalogue(rng: np.random.Generator, size: int = 300) -> list[tuple[str, str]]:
    numbers = rng.choice(np.arange(10002, 90000), size=size, replace=False)
    items = []
    for number in numbers:
        suffix = "ABCDEFGHLMNPRSW"[int(rng.integers(15))] if rng.random() < 0.3 else ""
        name = f"{_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))]} {_NOUNS[int(rng.integers(len(_NOUNS)))]}"
        items.append((f"{int(number)}{suffix}", name))
    items[0] = ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER")
    return items


def _moment(day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime.combine(START + dt.timedelta(days=int(day)), dt.time(int(hour), int(minute)))


def _clock(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(7, 20)), int(rng.integers(60))


def _product_lines(
    rng: np.random.Generator, catalogue: list[tuple[str, str]], size: float = 1.0
) -> list[tuple[str, int, int]]:
    """1-6 product lines: quantities 1-24, prices 0.50-15.00; ``size`` (mean 1) is the customer's basket size,
    so that customers differ in their typical spend as the Gamma-Gamma model has it."""
    lines = 1 + int(rng.binomial(5, min(0.95, 0.35 * size)))
    picks = rng.choice(len(catalogue), size=lines, replace=False)
    quantities = np.clip(1 + rng.poisson(7 * size, size=lines), 1, 24)
    return [(catalogue[int(i)][0], int(q), int(rng.integers(50, 1501))) for i, q in zip(picks, quantities, strict=True)]


def _special_lines(rng: np.random.Generator) -> list[tuple[str, int, int]]:
    lines = []
    if rng.random() < 0.06:
        lines.append(("POST", int(rng.integers(1, 4)), int(rng.choice([1800, 4000, 1500]))))
    if rng.random() < 0.015:
        lines.append(("M", int(rng.integers(1, 3)), int(rng.integers(50, 30001))))
    if rng.random() < 0.006:
        lines.append(("BANK CHARGES", 1, 1500))
    return lines


def generate_invoices(seed: int = 20111130, customers: int = 1500) -> tuple[list[Invoice], dict[str, str]]:
    """The invoices of the export, in no particular order (``write_invoice_export`` numbers them by time), and the
    product descriptions by stock code."""
    rng = np.random.default_rng(seed)
    catalogue = _catalogue(rng)
    ids = np.sort(rng.choice(np.arange(12346, 18288), size=customers, replace=False))
    invoices: list[Invoice] = []
    purchases: dict[int, list[Invoice]] = {}
    for customer in ids.tolist():
        country = COUNTRIES[int(rng.choice(len(COUNTRIES), p=COUNTRY_SHARES))]
        size = rng.gamma(2.5, 1 / 2.5)  # basket size: the customer's spend per purchase, relative
        rate = rng.gamma(0.9, 1 / 45)  # purchases a day while alive
        stop = rng.beta(1.2, 3.5)  # chance to stop after each purchase
        day = int(DAYS * rng.random() ** 1.4)
        days = [day]
        while rng.random() >= stop:
            day += max(1, int(np.ceil(rng.exponential(1 / rate))))
            if day >= DAYS:
                break
            days.append(day)
        own = []
        for day in days:
            for _ in range(2 if rng.random() < 0.06 else 1):
                invoice = Invoice(_moment(day, *_clock(rng)), customer, country)
                invoice.lines = _product_lines(rng, catalogue, size) + _special_lines(rng)
                own.append(invoice)
        purchases[customer] = sorted(own, key=lambda i: i.moment)
        invoices.extend(own)

    for customer, own in purchases.items():
        invoices.extend(_cancellations(rng, customer, own))

    customer_lines = sum(len(i.lines) for i in invoices)
    guest_lines = 0
    while guest_lines < customer_lines * 0.03 / 0.97:
        invoice = Invoice(_moment(int(rng.integers(DAYS)), *_clock(rng)), None, "United Kingdom")
        invoice.lines = _product_lines(rng, catalogue) + _special_lines(rng)
        guest_lines += len(invoice.lines)
        invoices.append(invoice)
    return invoices, dict(catalogue)


def _cancellations(rng: np.random.Generator, customer: int, own: list[Invoice]) -> list[Invoice]:
    """The customer's cancellation invoices: ordinary ones, rare ones past the window or over the purchase day."""
    days = sorted({(i.moment.date() - START).days for i in own})
    country = own[0].country
    found = []
    for invoice in own:
        day = (invoice.moment.date() - START).days
        products = [line for line in invoice.lines if line[0] not in EXCLUDED_CODES]
        draw = rng.random()
        if draw < 0.09:  # an ordinary cancellation, 0-60 days later
            later = [d for d in days if d > day]
            if rng.random() < 0.3:
                delay = 0
            elif rng.random() < 0.8:  # before the customer's next purchase day: it nets into this purchase
                limit = min(60, (later[0] - day - 1) if later else 60, DAYS - 1 - day)
                delay = int(rng.integers(0, limit + 1)) if limit > 0 else 0
            else:  # possibly after later purchases: it nets into the most recent one
                delay = int(rng.integers(1, 61))
            if day + delay >= DAYS:
                continue
            picks = rng.choice(len(products), size=int(rng.integers(1, len(products) + 1)), replace=False)
            lines = [(products[int(i)][0], -int(rng.integers(1, products[int(i)][1] + 1)), products[int(i)][2])
                     for i in picks]  # fmt: skip
            if delay == 0 and rng.random() < 0.3:  # same day, possibly before the purchase's time
                moment = _moment(day, *_clock(rng))
            elif delay == 0:
                moment = invoice.moment + dt.timedelta(minutes=int(rng.integers(1, 240)))
                if moment.date() != invoice.moment.date():
                    moment = invoice.moment.replace(hour=23, minute=59)
            else:
                moment = _moment(day + delay, *_clock(rng))
            if rng.random() < 0.02:  # a manual adjustment cancelled with it (excluded like the purchase's)
                lines.append(("M", -1, int(rng.integers(50, 2001))))
            found.append(Invoice(moment, customer, country, cancel=True, lines=lines))
        elif draw < 0.0925:  # cancels more than the whole purchase day, the same day
            code, quantity, cents = products[0]
            day_cents = sum(q * c for i in own if i.moment.date() == invoice.moment.date()
                            for code_, q, c in i.lines if code_ not in EXCLUDED_CODES)  # fmt: skip
            extra = day_cents // cents + 1 + int(rng.integers(0, 5))
            moment = invoice.moment + dt.timedelta(minutes=int(rng.integers(1, 120)))
            if moment.date() != invoice.moment.date():
                moment = invoice.moment.replace(hour=23, minute=59)
            found.append(Invoice(moment, customer, country, cancel=True, lines=[(code, -(quantity + extra), cents)]))

    last = own[-1]
    last_day = (last.moment.date() - START).days
    room = DAYS - 1 - last_day
    draw = rng.random()
    if room >= 91 and draw < 0.022:  # long after the last purchase: past a 90-day window, or just at it
        if draw < 0.0025:  # exactly 90 calendar days, later in the day than the purchase (more than 90 x 24 hours)
            delay, moment_clock = 90, (23, 30)
        elif draw < 0.005:  # 91 calendar days, earlier in the day than the purchase (less than 91 x 24 hours)
            delay, moment_clock = 91, (6, 0)
        else:
            delay, moment_clock = int(rng.integers(91, min(200, room) + 1)), _clock(rng)
        products = [line for line in last.lines if line[0] not in EXCLUDED_CODES]
        code, quantity, cents = products[int(rng.integers(len(products)))]
        moment = _moment(last_day + delay, *moment_clock)
        found.append(Invoice(moment, customer, country, cancel=True, lines=[(code, -quantity, cents)]))
    return found


def write_invoice_export(path: Path, seed: int = 20111130, customers: int = 1500) -> int:
    """Write the export as a CSV with Python's csv module; return the number of lines (rows) written."""
    invoices, names = generate_invoices(seed, customers)
    invoices = sorted(invoices, key=lambda i: (i.moment, i.cancel, i.customer or 0))
    rows = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for number, invoice in enumerate(invoices, start=FIRST_INVOICE):
            name = f"C{number}" if invoice.cancel else str(number)
            stamp = f"{invoice.moment:%m/%d/%Y %H:%M}"
            customer = "" if invoice.customer is None else f"{invoice.customer}.0"
            for code, quantity, cents in invoice.lines:
                description = _SPECIAL.get(code) or names[code]
                price = f"{cents // 100}.{cents % 100:02d}"
                writer.writerow([name, code, description, quantity, stamp, price, customer, invoice.country])
                rows += 1
    return rows


@dataclass
class HandFigures:
    """What the aggregation by hand found, line counts first."""

    lines: int
    excluded_lines: int
    blank_id_lines: int
    blank_id_lines_kept_after_exclusion: int
    purchase_lines: int
    return_lines: int
    returns_netted: int
    returns_past_window: int
    #: Returns exactly return_window_days calendar days after their purchase day (netted).
    returns_at_window: int
    #: Returns on a purchase day, earlier in the day than any purchase of it (netted into that day).
    returns_same_day_before_purchase: int
    returns_without_earlier_purchase: int
    purchase_days: int
    days_below_zero: int
    customers: int
    total_revenue: float
    cancel_invoices: int


def aggregate_by_hand(
    export: Path, out: Path, excluded: tuple[str, ...] = EXCLUDED_CODES, return_window_days: int = 90
) -> tuple[pd.DataFrame, HandFigures]:
    """Pre-aggregate the export by hand into ``out`` (customer_id, timestamp, amount: one row per purchase day)."""
    raw = pd.read_csv(export, dtype=str, keep_default_na=False)
    assert list(raw.columns) == COLUMNS
    is_excluded = raw["StockCode"].isin(excluded)
    blank = raw["Customer ID"].str.strip() == ""
    lines = raw[~is_excluded & ~blank].copy()
    lines["customer_id"] = lines["Customer ID"].str.removesuffix(".0")
    price_cents = (lines["Price"].astype(float) * 100).round().astype("int64")
    lines["cents"] = lines["Quantity"].astype("int64") * price_cents
    lines["moment"] = pd.to_datetime(lines["InvoiceDate"], format=TIMESTAMP_FORMAT)
    lines["day"] = lines["moment"].dt.normalize()

    purchases = lines[lines["cents"] >= 0]
    returns = lines[lines["cents"] < 0]
    days = purchases.groupby(["customer_id", "day"], as_index=False).agg(
        cents=("cents", "sum"), first_moment=("moment", "min")
    )
    matched = pd.merge_asof(
        returns.sort_values("day")[["customer_id", "day", "moment", "cents"]],
        days.sort_values("day")[["customer_id", "day", "first_moment"]].assign(purchase_day=lambda f: f["day"]),
        on="day", by="customer_id", direction="backward",
    )  # fmt: skip
    gap = (matched["day"] - matched["purchase_day"]).dt.days
    netted = matched[gap <= return_window_days]
    back = netted.groupby(["customer_id", "purchase_day"])["cents"].sum().rename("returned")
    days = days.drop(columns="first_moment").join(back, on=["customer_id", "day"])
    days["returned"] = days["returned"].fillna(0).astype("int64")
    days["net"] = days["cents"] + days["returned"]
    below = int((days["net"] < 0).sum())
    days["net"] = days["net"].clip(lower=0)

    hand = pd.DataFrame(
        {
            "customer_id": days["customer_id"],
            "timestamp": days["day"].dt.strftime("%Y-%m-%d"),
            "amount": [f"{c // 100}.{c % 100:02d}" for c in days["net"].tolist()],
        }
    ).sort_values(["customer_id", "timestamp"])
    out.parent.mkdir(parents=True, exist_ok=True)
    hand.to_csv(out, index=False)
    figures = HandFigures(
        lines=len(raw),
        excluded_lines=int(is_excluded.sum()),
        blank_id_lines=int(blank.sum()),
        blank_id_lines_kept_after_exclusion=int((blank & ~is_excluded).sum()),
        purchase_lines=len(purchases),
        return_lines=len(returns),
        returns_netted=len(netted),
        returns_past_window=int((gap > return_window_days).sum()),
        returns_at_window=int((gap == return_window_days).sum()),
        returns_same_day_before_purchase=int(((gap == 0) & (matched["moment"] < matched["first_moment"])).sum()),
        returns_without_earlier_purchase=int(matched["purchase_day"].isna().sum()),
        purchase_days=len(days),
        days_below_zero=below,
        customers=int(days["customer_id"].nunique()),
        total_revenue=int(days["net"].sum()) / 100,
        cancel_invoices=int(raw.loc[raw["Invoice"].str.startswith("C"), "Invoice"].nunique()),
    )
    return hand, figures
