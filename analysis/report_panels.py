"""The report's panels as inline SVG, drawn from analysis.plot_data's HeatmapData and PhaseMapData.

The numbers are those of the PNG/PDF figures (the same data objects, the same colour mapping:
analysis.plots.heatmap_scale); only the drawing differs. Every cell is a ``<rect>`` carrying

    data-tip   its tooltip, plain text (the page's script shows it with textContent, never as HTML)
    data-cell  "<section>-<row>-<column>": the same id on every panel of a diagram and on its table row, so
               hovering one lights up the others

Geometry: cell (i, j) of the grid (row 0 = hot end on top, column 0 = smallest load) is drawn at
x = LEFT + j * cell_w, y = TOP + i * cell_h, in SVG user units (CSS pixels at the natural size); boundary
segments of plot_data (cell centres at integers, edges at +-0.5) map onto the same frame. Every SVG scales to
its container's width (viewBox), so text sizes are set relative to the natural size.
"""

from __future__ import annotations

import html
import math

import numpy as np

from analysis.plot_data import (
    MISSING_COLOR,
    PHASE_KEY,
    UNCERTAIN_BELOW,
    Grid,
    HeatmapData,
    PhaseMapData,
)
from analysis.plots import INTERPOLATED_VEIL, MAX_ANNOTATED_CELLS, heatmap_scale, is_dark

# Natural sizes in CSS pixels: a metric panel fits four across a 1500 px page, the phase map fills a page's width.
PANEL_PLOT_WIDTH, PANEL_PLOT_HEIGHT = 300.0, 230.0
PHASE_PLOT_WIDTH, PHASE_PLOT_HEIGHT = 760.0, 460.0
CELL_MIN = 8.0  # px per cell side, whatever the grid
PANEL_CELL_MAX, PHASE_CELL_MAX = 64.0, 120.0  # a small grid's cells stay this size (the page does not upscale)
LEFT, TOP, BOTTOM = 58.0, 22.0, 46.0  # room for the y tick labels and axis title, the title, the x ticks
TITLE_CHAR_PX = 6.5  # the mean advance of a character of the 11 px bold title font (report.css), a bound
BAR_GAP, BAR_WIDTH, BAR_LABELS = 10.0, 12.0, 44.0  # the colour bar right of a panel
GRADIENT_STOPS = 33
FONT = 10.0  # px at the natural size
ROTATE_X_LABELS_ABOVE = 8  # more load values than this: x tick labels drawn vertically, as in the PNG
TOOLTIP_VALUE_FORMAT = ".4g"  # more digits than the figures print, fewer than the table's raw values
TOOLTIP_SPREAD_FORMAT = ".2g"


def _attr(text: str) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    return format(float(value), ".2f").rstrip("0").rstrip(".")


def _hex(rgba) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in rgba[:3]))


def _cell_size(grid: Grid, width: float, height: float, largest: float) -> tuple[float, float]:
    ny, nx = grid.shape
    return (float(np.clip(width / max(nx, 1), CELL_MIN, largest)),
            float(np.clip(height / max(ny, 1), CELL_MIN, largest)))


def cell_id(section: str, i: int, j: int) -> str:
    """The data-cell id of grid position (i, j) in a diagram: shared by its panels and its table row."""
    return f"{section}-{i}-{j}"


def cell_heading(grid: Grid, i: int, j: int) -> str:
    """'width 64 · batch_size 16': the knob values of grid position (i, j)."""
    return f"{grid.load_name} {grid.x_labels[j]} · {grid.temperature_name} {grid.y_labels[i]}"


def _axes(grid: Grid, cw: float, ch: float, title: str) -> list[str]:
    """Title, tick labels and axis titles of a grid drawn at (LEFT, TOP) with cells cw x ch."""
    ny, nx = grid.shape
    width, height = nx * cw, ny * ch
    # A title wider than the panel is squeezed into it (SVG text is never wrapped, and was clipped).
    room = width + LEFT
    fit = (f' textLength="{_num(room)}" lengthAdjust="spacingAndGlyphs"'
           if len(title) * TITLE_CHAR_PX > room else "")
    out = [f'<text x="{_num(LEFT + width / 2)}" y="{_num(TOP - 8)}" text-anchor="middle" class="title"{fit}>'
           f"{html.escape(title)}</text>"]
    for i, label in enumerate(grid.y_labels):
        out.append(f'<text x="{_num(LEFT - 4)}" y="{_num(TOP + (i + 0.5) * ch)}" text-anchor="end" '
                   f'dominant-baseline="middle">{html.escape(label)}</text>')
    vertical = nx > ROTATE_X_LABELS_ABOVE
    for j, label in enumerate(grid.x_labels):
        x, y = LEFT + (j + 0.5) * cw, TOP + height + 4
        if vertical:
            out.append(f'<text transform="translate({_num(x)},{_num(y)}) rotate(-90)" text-anchor="end" '
                       f'dominant-baseline="middle">{html.escape(label)}</text>')
        else:
            out.append(f'<text x="{_num(x)}" y="{_num(y + FONT)}" text-anchor="middle">{html.escape(label)}</text>')
    out.append(f'<text x="{_num(LEFT + width / 2)}" y="{_num(TOP + height + BOTTOM - 4)}" text-anchor="middle">'
               f"{html.escape(grid.load_name)} (load →)</text>")
    out.append(f'<text transform="translate(12,{_num(TOP + height / 2)}) rotate(-90)" text-anchor="middle" '
               f'dominant-baseline="middle">{html.escape(grid.temperature_name)} (hot ↑)</text>')
    return out


def _boundaries(segments, cw: float, ch: float, css: str) -> str:
    """plot_data boundary segments ((x0, y0), (x1, y1)) in cell units as one SVG path."""
    if not segments:
        return ""
    d = " ".join(f"M{_num(LEFT + (x0 + 0.5) * cw)} {_num(TOP + (y0 + 0.5) * ch)}"
                 f"L{_num(LEFT + (x1 + 0.5) * cw)} {_num(TOP + (y1 + 0.5) * ch)}" for (x0, y0), (x1, y1) in segments)
    return f'<path class="{css}" d="{d}"/>'


def _svg(css: str, width: float, height: float, body: list[str], label: str, **data) -> str:
    extra = "".join(f' data-{k}="{_attr(v)}"' for k, v in data.items())
    return (f'<svg class="{css}" viewBox="0 0 {_num(width)} {_num(height)}" width="{_num(width)}" '
            f'height="{_num(height)}" role="img" aria-label="{_attr(label)}"{extra} '
            f'xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


# ---------------------------------------------------------------------------------------------
# Metric panels


def heatmap_tip(data: HeatmapData, i: int, j: int) -> str:
    """Tooltip of cell (i, j): knob values, the value, and the mean ± std over its members with their count."""
    lines = [cell_heading(data.grid, i, j)]
    value = data.values[i, j]
    if not np.isfinite(value):
        lines.append(f"{data.title}: missing")
    else:
        lines.append(f"{data.title}: {format(float(value), TOOLTIP_VALUE_FORMAT)}")
        if data.log_scale and value <= 0:
            lines.append("not drawn: a log colour scale cannot show values ≤ 0")
    s = data.spread
    if s is not None:
        n, std = int(s.count[i, j]), s.std[i, j]
        if n == 1 or (n > 1 and not np.isfinite(std)):
            spread = f"from {n} {s.members if n > 1 else s.members[:-1]} (no spread)"
        else:
            spread = f"std {format(float(std), TOOLTIP_SPREAD_FORMAT)} over {n} {s.members}"
        if n == 0:
            lines.append(f"no {s.members} with a value")
        elif s.column != data.metric:  # a log panel: the mean it is the log of, and that mean's spread
            lines.append(f"{s.column}: mean {format(float(s.mean[i, j]), TOOLTIP_VALUE_FORMAT)}, {spread}")
        else:
            lines.append(spread)
    return "\n".join(lines)


def _color_bar(data: HeatmapData, x: float, height: float, gradient_id: str) -> list[str]:
    """The colour bar of a panel at x, from the top of the grid down ``height``: the colormap, ticks, clip
    arrows (triangles) where values lie beyond the range."""
    import matplotlib.ticker as mticker

    cmap, norm, _ = heatmap_scale(data)
    stops = "".join(f'<stop offset="{_num(100 * f)}%" stop-color="{_hex(cmap(1 - f))}"/>'
                    for f in np.linspace(0, 1, GRADIENT_STOPS))
    out = [f'<defs><linearGradient id="{gradient_id}" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>',
           f'<rect class="bar" x="{_num(x)}" y="{_num(TOP)}" width="{_num(BAR_WIDTH)}" height="{_num(height)}" '
           f'fill="url(#{gradient_id})"/>']
    locator = mticker.LogLocator() if data.log_scale else mticker.MaxNLocator(5)
    ticks = [t for t in locator.tick_values(data.vmin, data.vmax) if data.vmin <= t <= data.vmax]
    for t in ticks:
        y = TOP + (1 - float(norm(t))) * height
        out.append(f'<line x1="{_num(x + BAR_WIDTH)}" x2="{_num(x + BAR_WIDTH + 3)}" y1="{_num(y)}" y2="{_num(y)}" '
                   f'class="tick"/><text x="{_num(x + BAR_WIDTH + 5)}" y="{_num(y)}" dominant-baseline="middle">'
                   f"{html.escape(format(float(t), '.3g'))}</text>")
    mid = x + BAR_WIDTH / 2
    if data.clipped_high:
        out.append(f'<polygon class="clip" points="{_num(x)},{_num(TOP - 1)} {_num(x + BAR_WIDTH)},{_num(TOP - 1)} '
                   f'{_num(mid)},{_num(TOP - 9)}"><title>values above {data.vmax:.3g} drawn at the top colour'
                   "</title></polygon>")
    if data.clipped_low:
        low = TOP + height
        out.append(f'<polygon class="clip" points="{_num(x)},{_num(low + 1)} {_num(x + BAR_WIDTH)},{_num(low + 1)} '
                   f'{_num(mid)},{_num(low + 9)}"><title>values below {data.vmin:.3g} drawn at the bottom colour'
                   "</title></polygon>")
    return out


def heatmap_svg(data: HeatmapData, *, section: str) -> str:
    """One metric panel: coloured cells with tooltips, values printed in small grids, dashed phase boundaries,
    colour bar. ``section``: the diagram's id prefix (unique on the page)."""
    grid = data.grid
    ny, nx = grid.shape
    cw, ch = _cell_size(grid, PANEL_PLOT_WIDTH, PANEL_PLOT_HEIGHT, PANEL_CELL_MAX)
    cmap, norm, drawn = heatmap_scale(data)
    colors = cmap(norm(np.ma.masked_invalid(drawn)))
    body = _axes(grid, cw, ch, data.title)
    texts = []
    for i in range(ny):
        for j in range(nx):
            x, y = LEFT + j * cw, TOP + i * ch
            body.append(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(cw)}" height="{_num(ch)}" '
                        f'fill="{_hex(colors[i, j])}" data-cell="{cell_id(section, i, j)}" '
                        f'data-tip="{_attr(heatmap_tip(data, i, j))}"/>')
            text = data.cell_text(i, j) if data.print_values else ""
            if text:
                texts.append(f'<text x="{_num(x + cw / 2)}" y="{_num(y + ch / 2)}" text-anchor="middle" '
                             f'dominant-baseline="middle" fill="{"white" if is_dark(colors[i, j]) else "black"}">'
                             f"{html.escape(text)}</text>")
    decor = [_boundaries(data.boundaries, cw, ch, "boundary dashed"), *texts]
    body.append('<g class="decor">' + "".join(decor) + "</g>")
    bar_x = LEFT + nx * cw + BAR_GAP
    body += _color_bar(data, bar_x, ny * ch, f"bar-{section}-{data.metric}")
    width, height = bar_x + BAR_WIDTH + BAR_LABELS, TOP + ny * ch + BOTTOM
    return _svg("panel heatmap", width, height, body, f"{data.title} by {grid.load_name} and "
                f"{grid.temperature_name}", metric=data.metric)


# ---------------------------------------------------------------------------------------------
# Phase map


def phase_tip(data: PhaseMapData, i: int, j: int) -> str:
    """Tooltip of cell (i, j): knob values, the phase and what it means, the deciding numbers, missing members."""
    label = data.labels[i, j]
    lines = [cell_heading(data.grid, i, j),
             f"phase {label}: {PHASE_KEY[label]}" if label is not None else "no phase"]
    confidence = data.confidence[i, j] if data.confidence is not None else math.nan
    if math.isfinite(confidence):
        runner = data.runner_up[i, j] if data.runner_up is not None else None
        lines.append(f"label in {confidence:.0%} of seed resamplings"
                     + (f"; runner-up {runner}" if runner else "; every resampling agrees"))
    reason = data.reasons[i, j] if data.reasons is not None else None
    if reason:
        lines.append(str(reason))
    note = data.notes[i, j] if data.notes is not None else None
    if note:
        lines.append(f"members: {note}")
    elif data.start_seeds_only[i, j]:
        lines.append("trained at the adaptive search's starting seeds only")
    return "\n".join(lines)


def phase_map_svg(data: PhaseMapData, *, section: str) -> str:
    """The phase map, large: one colour per phase (grey: none), solid boundaries, labels where they fit."""
    from matplotlib.colors import to_rgba

    grid = data.grid
    ny, nx = grid.shape
    cw, ch = _cell_size(grid, PHASE_PLOT_WIDTH, PHASE_PLOT_HEIGHT, PHASE_CELL_MAX)
    annotate = ny * nx <= MAX_ANNOTATED_CELLS
    label_size = _num(float(np.clip(min(cw / 3, ch / 2), 6, 18)))  # a label fits its cell: "IV-B" is 4 glyphs
    body = _axes(grid, cw, ch, "phase")
    texts = []
    uncertain, interpolated = data.uncertain, data.interpolated
    for i in range(ny):
        for j in range(nx):
            label = data.labels[i, j]
            color = data.colors[label] if label is not None else MISSING_COLOR
            x, y = LEFT + j * cw, TOP + i * ch
            pale = ' fill-opacity="0.4" class="uncertain"' if uncertain[i, j] else ""  # the label is seed noise
            if interpolated[i, j]:  # not trained: pale, with a dashed outline (uncertain cells have none)
                pale = (f' fill-opacity="{1 - INTERPOLATED_VEIL:g}" stroke="#555555" stroke-dasharray="3,2" '
                        f'class="interpolated"')
            body.append(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(cw)}" height="{_num(ch)}" fill="{color}"'
                        f'{pale} data-cell="{cell_id(section, i, j)}" data-tip="{_attr(phase_tip(data, i, j))}"/>')
            if annotate:
                ink = ("white" if label is not None and is_dark(to_rgba(color)) and not interpolated[i, j]
                       else "black")
                texts.append(f'<text x="{_num(x + cw / 2)}" y="{_num(y + ch / 2)}" text-anchor="middle" '
                             f'dominant-baseline="middle" font-size="{label_size}" fill="{ink}">'
                             f'{html.escape(label or "?")}</text>')
    body.append('<g class="decor">' + _boundaries(data.boundaries, cw, ch, "boundary") + "".join(texts) + "</g>")
    width, height = LEFT + nx * cw + 8, TOP + ny * ch + BOTTOM
    return _svg("panel phase-map", width, height, body, f"phase map by {grid.load_name} and {grid.temperature_name}",
                metric="phase")


def phase_key_html(data: PhaseMapData) -> str:
    """The key beside the phase map: colour, label, what it means (PHASE_KEY), how many cells."""
    items = []
    for p in data.phases:
        items.append(f'<li><span class="swatch" style="background:{data.colors[p]}"></span><b>{html.escape(p)}</b> '
                     f"{html.escape(PHASE_KEY[p])} <span class='muted'>({data.counts[p]} cells)</span></li>")
    if data.counts.get("unlabelled"):
        items.append(f'<li><span class="swatch" style="background:{MISSING_COLOR}"></span><b>no phase</b> '
                     f"a deciding value is missing <span class='muted'>({data.counts['unlabelled']} cells)</span></li>")
    if data.interpolated.any():
        items.append(f'<li><span class="swatch" style="background:#c0c0c0;opacity:{1 - INTERPOLATED_VEIL:g};'
                     f'outline:1px dashed #555"></span><b>pale, dashed</b> interpolated (not trained): its label '
                     f"comes from its trained neighbours' metrics and no claim rests on it "
                     f"<span class='muted'>({int(data.interpolated.sum())} cells)</span></li>")
    if data.uncertain.any():
        items.append(f'<li><span class="swatch" style="background:#808080;opacity:0.4"></span><b>pale</b> label '
                     f"in fewer than {UNCERTAIN_BELOW:.0%} of seed resamplings (hover: how often, and the runner-up) "
                     f"<span class='muted'>({int(data.uncertain.sum())} cells)</span></li>")
    return "<ul class='phase-key'>" + "".join(items) + "</ul>"
