"""The usage page's plot, drawn on the server: a stacked bar per day, one colour per series
(accelerator model, or kind of work for CPU-hours). Pure: numbers in, the shapes' coordinates
out; the template writes them as inline SVG (no script, no inline style), each bar with a
<title> that says its day, series and hours, and the page shows the same figures as a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from .store import DailyUse

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 12, 44
MAX_X_LABELS = 10
# Colour-blind-safe (Okabe and Ito), as SVG fill attributes.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    label: str


@dataclass(frozen=True)
class Tick:
    """A label at `x` (days) or `y` (hours)."""

    position: float
    text: str


@dataclass(frozen=True)
class Chart:
    title: str
    summary: str
    width: int
    height: int
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    legend: list[tuple[str, str, float]]  # (series, fill, hours over the range)
    baseline: float
    left: float


def series_hours(
    rows: Iterable[DailyUse],
    series: Callable[[DailyUse], str | None],
    value: Callable[[DailyUse], int],
    per_hour: int,
) -> dict[tuple[date, str], float]:
    """Hours per (day, series) of the rows; rows whose series is None are left out."""
    found: dict[tuple[date, str], float] = {}
    for row in rows:
        name = series(row)
        if name is not None:
            found[(row.day, name)] = found.get((row.day, name), 0.0) + value(row) / per_hour
    return found


def _scale(peak: float) -> tuple[float, int]:
    """A round top for the axis at or above the peak (1, 2 or 5 times a power of ten), and how
    many equal steps up to it make round labels."""
    if peak <= 0:
        return 1.0, 5
    power = 10.0 ** math.floor(math.log10(peak))
    step = next(step for step in (1, 2, 5, 10) if step * power >= peak)
    return step * power, 4 if step == 2 else 5


def _number(value: float) -> str:
    return f"{value:g}"


def _stack(
    day: date,
    x: float,
    band: float,
    values: dict[tuple[date, str], float],
    fills: dict[str, str],
    hours_per_pixel: float,
    unit: str,
) -> list[Bar]:
    """One day's bar: its series stacked from the baseline up, in the legend's order."""
    bars, y = [], float(HEIGHT - BOTTOM)
    for name, fill in fills.items():
        hours = values.get((day, name), 0.0)
        if hours > 0:
            height = hours / hours_per_pixel
            y -= height
            label = f"{day.isoformat()}, {name}: {hours:.2f} {unit}"
            bars.append(Bar(x + band * 0.15, y, max(band * 0.7, 1.0), height, fill, label))
    return bars


def chart(
    title: str, days: Sequence[date], values: dict[tuple[date, str], float], unit: str
) -> Chart:
    """Stacked bars of `values` (hours by day and series) over `days`."""
    names = sorted({name for _, name in values})
    fills = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    totals = [sum(values.get((day, name), 0.0) for name in names) for day in days]
    top, ticks = _scale(max(totals, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    band = plot_w / max(len(days), 1)
    bars = [
        bar
        for i, day in enumerate(days)
        for bar in _stack(day, LEFT + i * band, band, values, fills, top / plot_h, unit)
    ]
    every = max(1, -(-len(days) // MAX_X_LABELS))
    x_ticks = [
        Tick(LEFT + (i + 0.5) * band, day.strftime("%m-%d"))
        for i, day in enumerate(days)
        if i % every == 0
    ]
    y_ticks = [
        Tick(TOP + plot_h - plot_h * n / ticks, _number(top * n / ticks)) for n in range(ticks + 1)
    ]
    legend = [
        (name, fills[name], round(sum(v for (_, n), v in values.items() if n == name), 2))
        for name in names
    ]
    total = round(sum(totals), 2)
    summary = f"{title}: {total} {unit} over {len(days)} days" + (
        ", by " + ", ".join(f"{name} {hours}" for name, _, hours in legend) if legend else ""
    )
    return Chart(title, summary, WIDTH, HEIGHT, bars, x_ticks, y_ticks, legend, TOP + plot_h, LEFT)


def accelerator_chart(days: Sequence[date], rows: Iterable[DailyUse]) -> Chart:
    """Accelerator unit-hours (GPU-hours) per day, by model."""
    values = series_hours(rows, lambda row: row.model or None, lambda row: row.unit_seconds, 3600)
    return chart("Accelerator hours per day, by model", days, values, "h")


def cpu_chart(days: Sequence[date], rows: Iterable[DailyUse]) -> Chart:
    """CPU core-hours per day, by kind of work (offloaded work by site)."""
    values = series_hours(
        rows,
        lambda row: f"{row.kind} ({row.site})" if row.site else row.kind,
        lambda row: row.cpu_millisecond_seconds,
        3_600_000,
    )
    return chart("CPU core-hours per day, by kind", days, values, "core-h")
