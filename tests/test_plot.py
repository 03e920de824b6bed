"""tritonnet.plot: PNG line and bar charts without matplotlib."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from tritonnet import plot


def decode_png(path) -> np.ndarray:
    """A minimal decoder for what write_png writes (8-bit RGB, filter 0 on every row)."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(raw):
        length, kind = struct.unpack(">I4s", raw[position:position + 8])
        data = raw[position + 8:position + 8 + length]
        assert struct.unpack(">I", raw[position + 8 + length:position + 12 + length])[0] == zlib.crc32(kind + data)
        chunks[kind] = chunks.get(kind, b"") + data
        position += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_round_trips_pixels(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(plot.write_png(tmp_path / "a.png", pixels)), pixels)


def test_line_chart_draws_each_series_in_its_colour(tmp_path):
    chart = plot.LineChart({"train": ([1, 2, 3], [2.0, 1.0, 0.5]), "val": ([1, 2, 3], [2.2, float("nan"), 0.9])},
                           title="loss", xlabel="epoch", ylabel="loss")
    pixels = decode_png(plot.save(tmp_path / "lines.png", [chart], panel_size=(400, 300)))
    assert pixels.shape == (300, 400, 3)
    for colour in plot.PALETTE[:2]:
        assert (pixels == colour).all(axis=2).sum() > 50
    assert not (pixels == plot.PALETTE[2]).all(axis=2).any()
    assert (pixels == plot.BLACK).all(axis=2).sum() > 200  # axes and title


def test_bar_chart_bars_grow_with_their_values(tmp_path):
    chart = plot.BarChart({"conv1": {"triton": 1.0, "torch": 3.0}, "lrn": {"triton": 0.5}}, title="time",
                          ylabel="ms")
    pixels = decode_png(plot.save(tmp_path / "bars.png", [chart], panel_size=(400, 100)))
    triton_pixels = (pixels == plot.PALETTE[0]).all(axis=2).sum()
    torch_pixels = (pixels == plot.PALETTE[1]).all(axis=2).sum()
    assert torch_pixels > triton_pixels > 0  # 3 against 1 + 0.5


def test_charts_side_by_side_and_degenerate_inputs(tmp_path):
    charts = [plot.LineChart({}, title="empty"), plot.LineChart({"one": ([5], [5])}),
              plot.BarChart({"a": 0.0, "b": -1.0}), plot.LineChart({"x": ([0, 1], [float("inf"), 1e9])})]
    pixels = decode_png(plot.save(tmp_path / "grid.png", charts, columns=2, panel_size=(300, 200)))
    assert pixels.shape == (400, 600, 3)


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (0.013, 0.0171), (-250.0, 12_000.0), (3.0, 3.0)])
def test_ticks_are_round_and_cover_the_range(low, high):
    ticks = plot.nice_ticks(low, high)
    assert ticks and all(low - 1e-9 <= tick <= high + 1e-9 for tick in ticks)
    if high > low:
        steps = np.diff(ticks)
        assert np.allclose(steps, steps[0]) and len(ticks) >= 3
        mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
        assert any(np.isclose(mantissa, choice) for choice in (1, 2, 5, 10))


def test_every_printable_character_has_a_distinct_glyph():
    glyphs = {character: plot._glyph(character).tobytes() for character in map(chr, range(33, 127))}
    assert len(set(glyphs.values())) == len(glyphs)
    assert not plot._glyph(" ").any()


def test_bars_grow_the_panel_leave_out_missing_values_and_draw_the_reference(tmp_path):
    def draw(rows: int, slow, reference):
        values = {f"conv{row} input grad bf16": {"fast": 2.0 + row % 3, "slow": slow} for row in range(rows)}
        values["lrn1 fwd"] = {"fast": float("nan"), "slow": None}
        chart = plot.BarChart(values, title="bf16", reference=reference, value_format="{:.2f}X")
        return decode_png(plot.save(tmp_path / "ratios.png", [chart, chart], panel_size=(400, 100), title="speed-up",
                                    subtitle="batch 128"))

    def count(pixels, colour, axis=None):
        return (pixels == colour).all(axis=2).sum(axis=axis)

    few, many = draw(3, 0.5, 1.0), draw(30, 0.5, 1.0)
    assert few.shape[1] == many.shape[1] == 800 and many.shape[0] > few.shape[0] + 27 * plot.BAR_THICKNESS * 2
    assert count(many, plot.PALETTE[0]) > 5 * count(few, plot.PALETTE[0]) > 0
    assert count(few, plot.PALETTE[1]) > 2 * 3 * 30  # three "slow" bars in each panel
    legend_key = count(draw(3, None, 1.0), plot.PALETTE[1])
    assert 0 < legend_key == 2 * 14 * 5  # a series with no values keeps only its legend key, in both panels
    dashed = count(few, plot.AXIS_TEXT, axis=0).max()
    assert dashed > 2 * count(draw(3, 0.5, None), plot.AXIS_TEXT, axis=0).max()
