"""The report's charts, drawn server-side as PNG with Pillow.

PNG because mail clients (Gmail, Outlook) show no inline SVG; Pillow because it is one wheel
with no dependencies that draws a chart in a few milliseconds, where matplotlib would bring
numpy and half a dozen packages for three charts. Drawn at twice the size they are shown, so
they stay sharp on high-density screens.
"""

from __future__ import annotations

import io
import math
from functools import cache

from PIL import Image, ImageDraw, ImageFont

SCALE = 2
WIDTH = 600
HEIGHT = 220
TEXT = (68, 68, 68)
GRID = (226, 226, 226)
SUCCESS = (74, 120, 180)
ERROR = (204, 60, 50)
LIGHT = (178, 196, 222)
LINES = {
    "Latency p50": (74, 120, 180),
    "Latency p95": (150, 180, 220),
    "TTFT p50": (230, 130, 40),
    "TTFT p95": (245, 195, 140),
}
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 26, 26
MAX_X_LABELS = 12


@cache
def _font(size: int = 11):
    # Pillow's own FreeType font (Aileron): the same text on every machine, no system fonts.
    return ImageFont.load_default(size=size * SCALE)


class Canvas:
    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.image = Image.new("RGB", (width * SCALE, height * SCALE), "white")
        self.draw = ImageDraw.Draw(self.image)

    def text(self, x, y, text, *, fill=TEXT, anchor="la", size=11):
        self.draw.text((x * SCALE, y * SCALE), text, fill=fill, font=_font(size), anchor=anchor)

    def text_width(self, text: str, size: int = 11) -> float:
        return self.draw.textlength(text, font=_font(size)) / SCALE

    def rectangle(self, x0, y0, x1, y1, fill):
        if x1 > x0 and y1 > y0:
            self.draw.rectangle((x0 * SCALE, y0 * SCALE, x1 * SCALE - 1, y1 * SCALE - 1), fill)

    def line(self, points, fill, width=1):
        scaled = [(x * SCALE, y * SCALE) for x, y in points]
        self.draw.line(scaled, fill=fill, width=width * SCALE, joint="curve")

    def dot(self, x, y, fill, radius=2.5):
        r = radius * SCALE
        self.draw.ellipse((x * SCALE - r, y * SCALE - r, x * SCALE + r, y * SCALE + r), fill)

    def legend(self, entries: list[tuple[str, tuple]]):
        x = LEFT
        for label, color in entries:
            self.rectangle(x, 8, x + 10, 18, color)
            self.text(x + 14, 13, label, anchor="lm")
            x += 14 + self.text_width(label) + 16

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, "PNG", optimize=True)
        return buffer.getvalue()


def nice_ticks(maximum: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least `maximum`: steps of 1, 2 or 5 times a power of 10."""
    if not maximum or maximum <= 0:
        return [0, 1]
    rough = maximum / count
    power = 10 ** math.floor(math.log10(rough))
    step = next(n * power for n in (1, 2, 5, 10) if n * power >= rough)
    return [step * index for index in range(math.ceil(maximum / step - 1e-9) + 1)]


def _number(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _axes(canvas: Canvas, ticks: list[float], labels: list[str], suffix: str = ""):
    """Grid lines with their values, and the bucket labels under the plot (some skipped when
    there are many). Returns the function from a value to its y."""
    bottom, top = canvas.height - BOTTOM, TOP + 6
    high = ticks[-1]

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * value / high

    for tick in ticks:
        y = y_of(tick)
        canvas.line([(LEFT, y), (canvas.width - RIGHT, y)], GRID)
        canvas.text(LEFT - 6, y, _number(tick) + suffix, anchor="rm", size=10)
    every = math.ceil(len(labels) / MAX_X_LABELS) or 1
    slot = (canvas.width - LEFT - RIGHT) / max(len(labels), 1)
    for index, label in enumerate(labels):
        if index % every == 0:
            canvas.text(LEFT + slot * (index + 0.5), bottom + 6, label, anchor="ma", size=10)
    return y_of


def activity(labels: list[str], messages: list[int], errors: list[int]) -> bytes:
    """Messages per bucket, the errors among them in red."""
    canvas = Canvas(WIDTH, HEIGHT)
    canvas.legend([("Messages", SUCCESS), ("Errors", ERROR)])
    y_of = _axes(canvas, nice_ticks(max(messages, default=0)), labels)
    slot = (canvas.width - LEFT - RIGHT) / max(len(labels), 1)
    gap = min(slot * 0.2, 4)
    for index, (total, failed) in enumerate(zip(messages, errors, strict=True)):
        x0, x1 = LEFT + slot * index + gap / 2, LEFT + slot * (index + 1) - gap / 2
        canvas.rectangle(x0, y_of(total), x1, y_of(0), SUCCESS)
        canvas.rectangle(x0, y_of(failed), x1, y_of(0), ERROR)
    return canvas.png()


def timings(labels: list[str], series: dict[str, list[float | None]]) -> bytes:
    """Lines of seconds per bucket (latency and time-to-first-token percentiles); a bucket
    without a value breaks its line."""
    canvas = Canvas(WIDTH, HEIGHT)
    canvas.legend([(name, LINES[name]) for name in series])
    highest = max((value for values in series.values() for value in values if value), default=0)
    y_of = _axes(canvas, nice_ticks(highest), labels, suffix=" s")
    slot = (canvas.width - LEFT - RIGHT) / max(len(labels), 1)
    for name, values in series.items():
        run = []
        for index, value in enumerate([*values, None]):
            if value is not None:
                run.append((LEFT + slot * (index + 0.5), y_of(value)))
                continue
            if len(run) > 1:
                canvas.line(run, LINES[name], width=2)
            elif run:
                canvas.dot(*run[0], LINES[name])
            run = []
    return canvas.png()


def speeds(rows: list[tuple[str, float | None, float | None]]) -> bytes:
    """Tokens per second per model: this period's bar, the previous period's thinner below."""
    row_height = 26
    height = TOP + row_height * len(rows) + 8
    canvas = Canvas(WIDTH, height)
    canvas.legend([("This period", SUCCESS), ("Previous period", LIGHT)])
    label_width = 150
    plot = canvas.width - label_width - RIGHT - 70
    highest = max((value or 0 for _, now, before in rows for value in (now, before)), default=0)
    for index, (name, now, before) in enumerate(rows):
        top = TOP + row_height * index + 4
        shown = name if len(name) <= 22 else name[:21] + "…"
        canvas.text(label_width - 8, top + 8, shown, anchor="rm")
        if highest:
            canvas.rectangle(
                label_width, top, label_width + plot * (now or 0) / highest, top + 13, SUCCESS
            )
            canvas.rectangle(
                label_width, top + 15, label_width + plot * (before or 0) / highest, top + 20, LIGHT
            )
        value = "\N{EN DASH}" if now is None else f"{now:.1f} tok/s"
        canvas.text(
            label_width + plot * (now or 0) / (highest or 1) + 6,
            top + 7,
            value,
            anchor="lm",
            size=10,
        )
    return canvas.png()
