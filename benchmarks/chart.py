"""Bar charts of ratios as PNG files, with numpy and zlib only (matplotlib is not on the GPU machines).

Stand-in until ``tritonnet.plot`` (the training branch's chart writer) is in main: :func:`ratio_chart` is the
benchmarks' only drawing call, so switching is a change to this one function (each panel becomes one grouped bar
chart, ``{row label: {series: value}}``). Text is drawn in upper case with a 5x7 bitmap font.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy

_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000", ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000", "-": "00000 00000 00000 11111 00000 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000", "_": "00000 00000 00000 00000 00000 00000 11111",
    "/": "00000 00001 00010 00100 01000 10000 00000", ":": "00000 01100 01100 00000 01100 01100 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010", ")": "01000 00100 00010 00010 00010 00100 01000",
    "%": "11000 11001 00010 00100 01000 10011 00011", "=": "00000 00000 11111 00000 11111 00000 00000",
    "<": "00010 00100 01000 10000 01000 00100 00010", ">": "01000 00100 00010 00001 00010 00100 01000",
    "?": "01110 10001 00001 00010 00100 00000 00100", "*": "00000 00100 10101 01110 10101 00100 00000",
}
_FONT = {char: numpy.array([[bit == "1" for bit in row] for row in rows.split()]) for char, rows in _GLYPHS.items()}
_SCALE = 2  # pixels per font dot
_ADVANCE = 6 * _SCALE  # glyph width plus one dot of spacing
_TEXT_HEIGHT = 7 * _SCALE

# Series colours (a colour-blind-safe palette), the reference line, text.
_PALETTE = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0)]
_GREY = (150, 150, 150)
_BLACK = (20, 20, 20)


def _text(image: numpy.ndarray, x: int, y: int, text: str, colour=_BLACK, scale: int = _SCALE) -> None:
    """Draw ``text`` (upper-cased) with its top-left corner at (x, y), ``scale`` pixels per font dot."""
    for index, char in enumerate(text.upper()):
        glyph = numpy.kron(_FONT.get(char, _FONT["?"]), numpy.ones((scale, scale), dtype=bool))
        left = x + index * 6 * scale
        region = image[y:y + glyph.shape[0], left:left + glyph.shape[1]]
        region[glyph[:region.shape[0], :region.shape[1]]] = colour


def _rectangle(image: numpy.ndarray, x0: int, y0: int, x1: int, y1: int, colour) -> None:
    image[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = colour


def write_png(path: str, image: numpy.ndarray) -> None:
    """An 8-bit RGB PNG of an (height, width, 3) uint8 array."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def ratio_chart(path: str, title: str, panels: dict[str, list[tuple[str, dict[str, float | None]]]],
                reference: float = 1.0, subtitle: str = "") -> None:
    """Horizontal bars, one panel per key of ``panels`` side by side; in each panel a group of bars per row
    ``(label, {series: value})``, and a vertical line at ``reference`` (1.0: as fast as PyTorch eager). Missing
    values (None, NaN) are left out. Each bar is labelled with its value."""
    series = list(dict.fromkeys(name for rows in panels.values() for _, values in rows for name in values))
    colours = {name: _PALETTE[index % len(_PALETTE)] for index, name in enumerate(series)}
    values = [value for rows in panels.values() for _, row in rows for value in row.values()
              if value is not None and math.isfinite(value)]
    top = max([reference, *values]) * 1.15
    label_width = _ADVANCE * max([len(label) for rows in panels.values() for label, _ in rows] + [4]) + 10
    bar_area, value_width, bar_height = 360, _ADVANCE * 7, 12
    panel_width = label_width + bar_area + value_width + 20
    group_height = bar_height * max(len(series), 1) + 10
    header = 20 + 3 * (_TEXT_HEIGHT + 10)
    height = header + _TEXT_HEIGHT + 16 + group_height * max([len(rows) for rows in panels.values()] + [1]) + 30
    width = max(panel_width * max(len(panels), 1), _ADVANCE * (max(len(title), len(subtitle)) + 2))
    image = numpy.full((height, width, 3), 255, dtype=numpy.uint8)

    _text(image, 10, 10, title)
    _text(image, 10, 10 + _TEXT_HEIGHT + 10, subtitle)
    legend_x = 10
    for name in series:
        _rectangle(image, legend_x, 20 + 2 * (_TEXT_HEIGHT + 10), legend_x + _TEXT_HEIGHT,
                   20 + 2 * (_TEXT_HEIGHT + 10) + _TEXT_HEIGHT, colours[name])
        _text(image, legend_x + _TEXT_HEIGHT + 6, 20 + 2 * (_TEXT_HEIGHT + 10), name)
        legend_x += _TEXT_HEIGHT + 6 + _ADVANCE * (len(name) + 3)

    for index, (panel, rows) in enumerate(panels.items()):
        left = index * panel_width + 10
        bars_left = left + label_width
        _text(image, left, header, panel)
        top_y = header + _TEXT_HEIGHT + 16
        bottom_y = top_y + group_height * len(rows)
        reference_x = bars_left + int(bar_area * reference / top)
        for y in range(top_y - 4, bottom_y, 6):  # dashed reference line
            _rectangle(image, reference_x, y, reference_x + 2, y + 3, _GREY)
        _text(image, reference_x - _ADVANCE, bottom_y + 6, f"{reference:g}X")
        for row_index, (label, row) in enumerate(rows):
            y = top_y + row_index * group_height
            _text(image, left, y + (group_height - 10 - _TEXT_HEIGHT) // 2, label)
            for series_index, name in enumerate(series):
                value = row.get(name)
                if value is None or not math.isfinite(value):
                    continue
                bar_y = y + series_index * bar_height
                bar_end = bars_left + max(1, int(bar_area * value / top))
                _rectangle(image, bars_left, bar_y, bar_end, bar_y + bar_height - 2, colours[name])
                _text(image, bar_end + 4, bar_y + (bar_height - 9) // 2, f"{value:.2f}X", scale=1)
    write_png(path, image)

