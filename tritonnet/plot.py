"""PNG line and bar charts with numpy and zlib only (no matplotlib: it is not on the GPU machines).

A chart is a dataclass (:class:`LineChart`, :class:`BarChart`); :func:`save` draws one or several side by side into
a PNG::

    save("curves.png", [LineChart({"train": (epochs, train_loss), "val": (epochs, val_loss)}, title="loss",
                                  xlabel="epoch", ylabel="cross-entropy")])

A ``BarChart`` lists its categories down the left, one row each, and its panel grows taller with the rows;
``reference`` draws a dashed line at a value (1.0 for a speed-up) and ``value_format`` labels each bar::

    save("speedup.png", [BarChart({"conv1 fwd": {"triton": 1.52, "compile": 1.1}}, title="bf16", reference=1.0,
                                  value_format="{:.2f}X")],
         title="times faster than eager", subtitle="H100, batch 128")

Text uses a built-in 5x7 bitmap font (printable ASCII). Non-finite values and None are left out (a line breaks
there; a bar is not drawn).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

# tab10's colours: distinguishable, and familiar from matplotlib.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WHITE, BLACK, GRID, AXIS_TEXT = (255, 255, 255), (0, 0, 0), (228, 228, 228), (60, 60, 60)

# 5x7 glyphs for ASCII 32..126, 9 hex digits each: the 35 bits are the 7 rows of 5 pixels, top row first, the most
# significant bit the leftmost pixel.
_FONT_HEX = (
    "000000000108421004294a00000295f57d4a11f4717c463222226332544564d1088000000888420822082108880095754800084f9080"
    "0000030880000f800000000018c0022222003a33ae62e11842108e3a211111f7c441062e08ca97c427e1e0862e1910f462e7c2222108"
    "3a317462e3a317844c018c03180018c03088088882082001f07c002082088883a21110043a216d6ae3a31fc6317a31f463e3a308422e"
    "72518c65c7e10f421f7e10f42103a30bc62f4631fc63138842108e1c4210a4c4654c525142108421f4775ac6314639ace313a318c62e"
    "7a31f42103a318d64d7a31f52513e107043e7c842108446318c62e46318c5444631ad6aa462a22a31462a210847c222221f39084210e"
    "02082082038421084e11510000000000001f208200000000e0be2f4216cc63e000e8422e042d9c62f000e8fe0e1928e210801f18bc2e"
    "4216cc631100c2108e080610a4c4212a629230842108e001aad6310016cc631000e8c62e001e8fa10000d9bc210016cc210000e8383e"
    "211c4212600118c66d00118c54400118d6aa00115115100118bc2e001f1111f0884410821084210842084110880008a8800"
)
GLYPH_WIDTH, GLYPH_HEIGHT, GLYPH_ADVANCE = 5, 7, 6


def _glyph(character: str) -> np.ndarray:
    code = ord(character) if 32 <= ord(character) < 127 else ord("?")
    bits = int(_FONT_HEX[(code - 32) * 9:(code - 31) * 9], 16)
    pixels = [(bits >> (34 - position)) & 1 for position in range(35)]
    return np.array(pixels, dtype=bool).reshape(GLYPH_HEIGHT, GLYPH_WIDTH)


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` drawn at ``scale``."""
    return max(len(text) * GLYPH_ADVANCE - 1, 0) * scale, GLYPH_HEIGHT * scale


class Canvas:
    """An RGB image (``pixels``: height x width x 3, uint8) with the few primitives charts need."""

    def __init__(self, width: int, height: int, background=WHITE):
        self.pixels = np.empty((height, width, 3), dtype=np.uint8)
        self.pixels[:] = background

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    def rectangle(self, left: int, top: int, right: int, bottom: int, colour) -> None:
        """Fill the pixels with left <= x < right, top <= y < bottom (clipped)."""
        left, right = max(int(left), 0), min(int(right), self.width)
        top, bottom = max(int(top), 0), min(int(bottom), self.height)
        if left < right and top < bottom:
            self.pixels[top:bottom, left:right] = colour

    def line(self, x0: float, y0: float, x1: float, y1: float, colour, thickness: int = 1, dash: int = 0) -> None:
        """A straight line, ``thickness`` pixels wide (square brush), sampled twice per pixel of its length;
        ``dash`` > 0 draws it in dashes of that many pixels with gaps as long."""
        samples = int(max(abs(x1 - x0), abs(y1 - y0)) * 2) + 2
        drawn = np.arange(samples) // (2 * dash) % 2 == 0 if dash > 0 else np.ones(samples, dtype=bool)
        xs = np.rint(np.linspace(x0, x1, samples)).astype(np.int64)[drawn]
        ys = np.rint(np.linspace(y0, y1, samples)).astype(np.int64)[drawn]
        low, high = -(thickness // 2), thickness - thickness // 2
        for dx in range(low, high):
            for dy in range(low, high):
                x, y = xs + dx, ys + dy
                inside = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
                self.pixels[y[inside], x[inside]] = colour

    def text(self, x: int, y: int, text: str, colour=BLACK, scale: int = 1, vertical: bool = False,
             anchor: str = "left") -> None:
        """Draw ``text`` with its top-left corner at (x, y); ``anchor`` "center"/"right" moves it along its
        direction of writing. ``vertical`` writes bottom to top (for a y-axis label)."""
        width, height = text_size(text, scale)
        shift = {"left": 0, "center": width // 2, "right": width}[anchor]
        strip = np.zeros((height, width + scale), dtype=bool)
        for index, character in enumerate(text):
            glyph = np.kron(_glyph(character), np.ones((scale, scale), dtype=bool))
            strip[:, index * GLYPH_ADVANCE * scale:index * GLYPH_ADVANCE * scale + GLYPH_WIDTH * scale] = glyph
        if vertical:
            strip = np.rot90(strip)
            y -= strip.shape[0] - shift
        else:
            x -= shift
        rows, columns = np.nonzero(strip)
        rows, columns = rows + int(y), columns + int(x)
        inside = (columns >= 0) & (columns < self.width) & (rows >= 0) & (rows < self.height)
        self.pixels[rows[inside], columns[inside]] = colour


def write_png(path: str | Path, pixels: np.ndarray) -> Path:
    """Write an RGB uint8 array (height x width x 3) as an 8-bit PNG."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width, _ = pixels.shape
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), pixels.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    path = Path(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
                     + chunk(b"IEND", b""))
    return path


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw_step = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(multiple * magnitude for multiple in (1, 2, 5, 10) if multiple * magnitude >= raw_step)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + index * step, 12) for index in range(int((high - first) / step + 1e-9) + 1)]


def format_tick(value: float, step: float) -> str:
    """``value`` with as many decimals as the tick spacing needs (1e4 and up in short scientific form)."""
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.1e}".replace("e+0", "e").replace("e-0", "e-")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{value:.{decimals}f}"


def _padded_range(values: Sequence[float], include_zero: bool = False) -> tuple[float, float]:
    finite = [value for value in values if math.isfinite(value)]
    if include_zero:
        finite.append(0.0)
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high == low:
        spread = abs(high) * 0.1 or 1.0
        return low - spread, high + spread
    margin = (high - low) * 0.05
    return (low if include_zero and low == 0 else low - margin), high + margin


@dataclass
class LineChart:
    """One line per series: ``{name: (xs, ys)}``; points are marked, so a short run's few epochs show."""

    series: Mapping[str, tuple[Sequence[float], Sequence[float]]]
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""


@dataclass
class BarChart:
    """Bars per category: ``{category: value}`` (one series) or ``{category: {series: value}}`` (grouped bars,
    coloured by series in the order they first appear, with a legend). A series given as None in a category keeps
    its colour and leaves that bar out, so panels drawn side by side colour their series alike.

    One row per category down the left, bars growing to the right; the panel is as tall as its rows need.
    ``ylabel`` names the value axis, below the bars. ``reference`` draws a
    dashed line across the bars at that value; ``value_format`` (a ``str.format`` pattern such as ``"{:.2f}X"``)
    writes each bar's value at its end."""

    values: Mapping[str, float | None | Mapping[str, float | None]]
    title: str = ""
    ylabel: str = ""
    reference: float | None = None
    value_format: str | None = None


@dataclass
class _Frame:
    """The plotting area of a panel, and the data ranges mapped onto it."""

    left: int
    top: int
    right: int
    bottom: int
    x_range: tuple[float, float] = (0.0, 1.0)
    y_range: tuple[float, float] = (0.0, 1.0)
    y_ticks: list[float] = field(default_factory=list)

    def x(self, value: float) -> float:
        low, high = self.x_range
        return self.left + (value - low) / (high - low) * (self.right - self.left)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return self.bottom - (value - low) / (high - low) * (self.bottom - self.top)


def _legend_places(left: int, right: int, names: Sequence[str]) -> tuple[list[tuple[int, int]], int]:
    """Where each name's colour key goes, as (x, y below the legend's top), in rows from ``left`` wrapping at
    ``right``; and the legend's height."""
    x, y, places = left, 0, []
    for name in names:
        width = 18 + text_size(name)[0] + 14
        if x > left and x + width > right:
            x, y = left, y + 12
        places.append((x, y))
        x += width
    return places, (y + 12 if names else 0)


def _header_height(width: int, title: str, legend: Sequence[str]) -> int:
    return (34 if title else 12) + _legend_places(40, width - 12, legend)[1] + 4 * bool(legend)


def _header(canvas: Canvas, box: tuple[int, int, int, int], title: str, legend: Sequence[str]) -> int:
    """Draw a panel's title and legend at the top of ``box``; return where its plotting area may start."""
    left, top, right, _ = box
    if title:
        canvas.text((left + right) // 2, top + 8, title, BLACK, scale=2, anchor="center")
    legend_top = top + (34 if title else 12)
    places, _ = _legend_places(left + 40, right - 12, legend)
    for index, (name, (x, y)) in enumerate(zip(legend, places)):
        canvas.rectangle(x, legend_top + y + 1, x + 14, legend_top + y + 6, PALETTE[index % len(PALETTE)])
        canvas.text(x + 18, legend_top + y, name, BLACK)
    return top + _header_height(right - left, title, legend)


def _ticks(value_range: tuple[float, float], count: int = 5) -> list[tuple[float, str]]:
    """Round ticks inside ``value_range`` and their labels."""
    ticks = [tick for tick in nice_ticks(*value_range, count=count) if value_range[0] <= tick <= value_range[1]]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(ticks[0]) or 1.0
    return [(tick, format_tick(tick, step)) for tick in ticks]


def _fit(text: str, width: float) -> str:
    """``text``, cut short with "~" where it is wider than ``width`` pixels."""
    if text_size(text)[0] <= width:
        return text
    return text[:max(1, int(width // GLYPH_ADVANCE) - 1)] + "~"


def _frame(canvas: Canvas, box: tuple[int, int, int, int], title: str, xlabel: str, ylabel: str,
           y_range: tuple[float, float], legend: Sequence[str]) -> _Frame:
    """Draw the title, legend, labels, y grid and y ticks of a panel occupying ``box``; return its plotting area."""
    left, _, right, bottom = box
    plot_top = _header(canvas, box, title, legend)
    ticks = _ticks(y_range)
    label_width = max((text_size(label)[0] for _, label in ticks), default=0)
    frame = _Frame(left + 22 + label_width + 6, plot_top, right - 12, bottom - (40 if xlabel else 26),
                   y_range=y_range, y_ticks=[tick for tick, _ in ticks])
    if ylabel:
        canvas.text(left + 6, (frame.top + frame.bottom) // 2, ylabel, AXIS_TEXT, vertical=True, anchor="center")
    for tick, label in ticks:
        y = round(frame.y(tick))
        canvas.line(frame.left, y, frame.right, y, GRID)
        canvas.text(frame.left - 5, y - 3, label, AXIS_TEXT, anchor="right")
    if xlabel:
        canvas.text((frame.left + frame.right) // 2, frame.bottom + 22, xlabel, AXIS_TEXT, anchor="center")
    return frame


def _x_ticks(canvas: Canvas, frame: _Frame, grid: bool = False) -> None:
    """Tick marks and labels under the x axis (and vertical grid lines across the plot when ``grid``)."""
    for tick, label in _ticks(frame.x_range, count=6):
        x = round(frame.x(tick))
        if grid:
            canvas.line(x, frame.top, x, frame.bottom, GRID)
        canvas.line(x, frame.bottom, x, frame.bottom + 3, BLACK)
        canvas.text(x, frame.bottom + 7, label, AXIS_TEXT, anchor="center")


def _axes(canvas: Canvas, frame: _Frame) -> None:
    canvas.line(frame.left, frame.top, frame.left, frame.bottom, BLACK)
    canvas.line(frame.left, frame.bottom, frame.right, frame.bottom, BLACK)


def _draw_line_chart(canvas: Canvas, box: tuple[int, int, int, int], chart: LineChart) -> None:
    series = {name: ([float(x) for x in xs], [float(y) for y in ys]) for name, (xs, ys) in chart.series.items()}
    all_x = [x for xs, _ in series.values() for x in xs]
    all_y = [y for _, ys in series.values() for y in ys]
    frame = _frame(canvas, box, chart.title, chart.xlabel, chart.ylabel, _padded_range(all_y), list(series))
    frame.x_range = _padded_range(all_x)
    _x_ticks(canvas, frame)
    _axes(canvas, frame)
    for index, (xs, ys) in enumerate(series.values()):
        colour = PALETTE[index % len(PALETTE)]
        points = [(frame.x(x), frame.y(y)) if math.isfinite(x) and math.isfinite(y) else None for x, y in zip(xs, ys)]
        for start, end in zip(points, points[1:]):
            if start is not None and end is not None:
                canvas.line(*start, *end, colour, thickness=2)
        for point in points:
            if point is not None:
                canvas.rectangle(point[0] - 2, point[1] - 2, point[0] + 3, point[1] + 3, colour)


# Horizontal bar charts: pixels per bar, and between rows, when the panel is only as tall as its rows need.
BAR_THICKNESS, ROW_GAP = 10, 8


def _bars(chart: BarChart) -> tuple[dict[str, dict[str, float]], list[str]]:
    """``{category: {series: value}}`` without the missing values (None, NaN, inf), and every series name in the
    order of first appearance ("" for a one-series chart)."""
    groups = {str(category): (dict(value) if isinstance(value, Mapping) else {"": value})
              for category, value in chart.values.items()}
    names = list(dict.fromkeys(name for bars in groups.values() for name in bars))
    present = {category: {name: float(value) for name, value in bars.items()
                          if value is not None and math.isfinite(float(value))} for category, bars in groups.items()}
    return present, names


def _value_range(chart: BarChart, groups: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
    values = [value for bars in groups.values() for value in bars.values()]
    return _padded_range(values + ([float(chart.reference)] if chart.reference is not None else []), include_zero=True)


def _bar_chart_height(chart: BarChart, width: int) -> int:
    """The height a bar chart ``width`` pixels wide needs for its header, rows and value axis."""
    groups, names = _bars(chart)
    rows = len(groups) * (BAR_THICKNESS * len(names) + ROW_GAP)
    return _header_height(width, chart.title, [name for name in names if name]) + rows + (40 if chart.ylabel else 26)


def _draw_bar_chart(canvas: Canvas, box: tuple[int, int, int, int], chart: BarChart) -> None:
    """One row per category, its label on the left (cut short past 2/5 of the panel); the value axis at the bottom."""
    left, _, right, bottom = box
    groups, names = _bars(chart)
    plot_top = _header(canvas, box, chart.title, [name for name in names if name])
    value_labels = {(category, name): chart.value_format.format(value) if chart.value_format else ""
                    for category, bars in groups.items() for name, value in bars.items()}
    label_room = max((text_size(label)[0] + 6 for label in value_labels.values() if label), default=0)
    category_width = min(max((text_size(category)[0] for category in groups), default=0), (right - left) * 2 // 5)
    frame = _Frame(left + 12 + category_width + 8, plot_top, right - 12 - label_room,
                   bottom - (40 if chart.ylabel else 26), x_range=_value_range(chart, groups))
    _x_ticks(canvas, frame, grid=True)
    if chart.ylabel:
        canvas.text((frame.left + frame.right) // 2, frame.bottom + 22, chart.ylabel, AXIS_TEXT, anchor="center")
    row_height = (frame.bottom - frame.top) / max(len(groups), 1)
    thickness = max(1.0, min(row_height * 0.8, row_height - ROW_GAP) / max(len(names), 1))
    zero = frame.x(max(frame.x_range[0], min(0.0, frame.x_range[1])))
    label_places = []  # (left, top, text): drawn last, on white, so the reference line doesn't cross them
    for row_index, (category, bars) in enumerate(groups.items()):
        row_top = frame.top + row_height * row_index
        middle = round(row_top + row_height / 2)
        canvas.text(frame.left - 8, middle - 3, _fit(category, category_width), AXIS_TEXT, anchor="right")
        bars_top = row_top + (row_height - thickness * len(names)) / 2
        for name, value in bars.items():
            series_index = names.index(name)
            top = bars_top + thickness * series_index
            end = frame.x(value)
            canvas.rectangle(round(min(end, zero)), round(top), round(max(end, zero)) + 1, round(top + thickness) - 1,
                             PALETTE[series_index % len(PALETTE)])
            label = value_labels[category, name]
            label_left = round(end) + 4 if value >= 0 else round(end) - 4 - text_size(label)[0]
            label_places.append((label_left, round(top + thickness / 2) - 4, label))
    if chart.reference is not None:
        x = round(frame.x(float(chart.reference)))
        canvas.line(x, frame.top, x, frame.bottom, AXIS_TEXT, thickness=2, dash=4)
    for label_left, label_top, label in label_places:
        if label:
            canvas.rectangle(label_left - 1, label_top - 1, label_left + text_size(label)[0] + 1, label_top + 8, WHITE)
            canvas.text(label_left, label_top, label, AXIS_TEXT)
    _axes(canvas, frame)


def render(charts: Sequence[LineChart | BarChart], columns: int | None = None,
           panel_size: tuple[int, int] = (560, 380), title: str = "", subtitle: str = "") -> np.ndarray:
    """Draw ``charts`` in a grid (``columns`` per row, all in one row by default) under an optional figure
    ``title`` and ``subtitle``; return the RGB pixels. A grid row of panels is ``panel_size``'s height, or taller
    where a bar chart in it needs more for its rows."""
    columns = columns or max(len(charts), 1)
    panel_width, panel_height = panel_size
    grid = [charts[start:start + columns] for start in range(0, len(charts), columns)] or [[]]
    heights = [max([panel_height] + [_bar_chart_height(chart, panel_width) for chart in row
                                     if isinstance(chart, BarChart)]) for row in grid]
    header = (32 if title else 0) + (15 if subtitle else 0) + (6 if title or subtitle else 0)
    width = max(panel_width * columns, text_size(title, 2)[0] + 20, text_size(subtitle)[0] + 20)
    canvas = Canvas(width, header + sum(heights))
    if title:
        canvas.text(10, 12, title, BLACK, scale=2)
    if subtitle:
        canvas.text(10, 12 + (32 if title else 0), subtitle, AXIS_TEXT)
    top = header
    for row, height in zip(grid, heights):
        for column, chart in enumerate(row):
            box = (panel_width * column, top, panel_width * (column + 1), top + height)
            (_draw_line_chart if isinstance(chart, LineChart) else _draw_bar_chart)(canvas, box, chart)
        top += height
    return canvas.pixels


def save(path: str | Path, charts: Sequence[LineChart | BarChart], columns: int | None = None,
         panel_size: tuple[int, int] = (560, 380), title: str = "", subtitle: str = "") -> Path:
    """Draw ``charts`` side by side (see :func:`render`) into the PNG file ``path``."""
    return write_png(path, render(charts, columns, panel_size, title, subtitle))


__all__ = ["BarChart", "Canvas", "LineChart", "nice_ticks", "render", "save", "write_png"]
