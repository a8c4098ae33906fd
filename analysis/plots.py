"""Drawing the figures from :mod:`analysis.plot_data` (matplotlib, headless).

matplotlib is imported inside the functions (it is slow to import and only drawing needs it) and used through
``matplotlib.figure.Figure`` directly, never pyplot: no global figure state, no GUI backend, safe in threads.
Each ``save_*`` function writes PNG and PDF next to each other and returns their paths.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pandas as pd

from analysis.curve_data import CurveData
from analysis.history_data import CellHistory
from analysis.phases import MC_UNIT_DEFAULT
from analysis.plot_data import (
    MAX_PRINTED_CELLS,
    MISSING_COLOR,
    Grid,
    PHASE_KEY,
    INTERPOLATED_KEY,
    START_SEEDS_KEY,
    UNCERTAIN_KEY,
    HeatmapData,
    PhaseMapData,
    heatmap_data,
    panel_specs,
    phase_map_data,
)
from workloads.atomic import write_atomically
from workloads.metric_specs import BUILTINS, MetricSet

FORMATS = ("png", "pdf")
PANELS_PER_ROW = 4  # the panels figure: 2 rows x 4 for the paper's 7 panels and the phase map
PNG_DPI = 110
# Cell labels are written into the phase map only up to this many cells (beyond, they are unreadable).
MAX_ANNOTATED_CELLS = 400
# An interpolated cell's phase colour is drawn under a white veil of this opacity: paler than a trained cell's.
INTERPOLATED_VEIL = 0.45
# A training curve's loss axis is logarithmic when the loss spans more than this factor (a converging run falls
# by orders of magnitude; a linear axis would flatten all but its first epochs).
LOG_SCALE_SPAN = 10


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    # Fixed margins (set per figure with subplots_adjust), not constrained layout: that re-measures every
    # text several times per save and tripled the drawing time.
    return Figure(figsize=(width, height))


# A figure's file name: knob names and values (analysis/admission.py admits no others), letters, digits and _.,=+-.
_FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,=+-]{0,199}")


def figure_stem(out_dir: str, name: str) -> str:
    """``out_dir``/``name``, the stem of a figure's files; ValueError unless ``name`` is one plain file name, so
    that no name read from a run directory ("x/../../elsewhere") puts a figure outside the analysis folder."""
    if not _FIGURE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"figure name {name[:80]!r} is not a plain file name (letters, digits and _.,=+-): "
                         f"it comes from the run's tables, which name a knob no run has; nothing was written there")
    return os.path.join(out_dir, name)


def _save(fig, stem: str, formats=FORMATS) -> dict[str, str]:
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    paths = {}
    for fmt in formats:
        path = f"{stem}.{fmt}"
        # Written whole and renamed over the name: a link planted under it is replaced, never written through.
        # "tight": the phase map's legend sits right of its axes and grows with its entries (an adaptive run's)
        write_atomically(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=PNG_DPI if fmt == "png" else None,
                                                       bbox_inches="tight"))
        paths[fmt] = path
    return paths


def _axes_grid(ax, grid: Grid, *, show_x: bool = True, show_y: bool = True) -> None:
    ax.set_xticks(range(len(grid.x_values)))
    ax.set_xticklabels(grid.x_labels, rotation=90 if len(grid.x_values) > 8 else 0, fontsize=7)
    ax.set_yticks(range(len(grid.y_values)))
    ax.set_yticklabels(grid.y_labels, fontsize=7)
    ax.tick_params(labelbottom=show_x, labelleft=show_y)
    if show_x:
        ax.set_xlabel(f"{grid.load_name} (load →)")
    if show_y:
        ax.set_ylabel(f"{grid.temperature_name} (hot ↑)")


def _draw_boundaries(ax, segments, *, color="black", width=1.0) -> None:
    if not segments:
        return
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segments, colors=color, linewidths=width))


def heatmap_scale(data: HeatmapData):
    """(cmap, norm, drawn values) of a panel: the one colour mapping of the PNG/PDF panels and the report's SVG.

    drawn values: (ny, nx) ``data.values`` with what the scale cannot show (0 or less on a log scale) as NaN;
    ``cmap(norm(np.ma.masked_invalid(drawn)))`` gives each cell's RGBA (missing cells in MISSING_COLOR)."""
    import matplotlib as mpl
    from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm

    cmap = mpl.colormaps[data.cmap].with_extremes(bad=MISSING_COLOR)
    values = data.values
    if data.log_scale:
        norm = LogNorm(vmin=data.vmin, vmax=data.vmax, clip=False)
        values = np.where(values > 0, values, np.nan)  # a log scale cannot show 0 or less: drawn as missing
    elif data.center is not None and data.vmin < data.center < data.vmax:
        norm = TwoSlopeNorm(vcenter=data.center, vmin=data.vmin, vmax=data.vmax)
    else:
        norm = Normalize(vmin=data.vmin, vmax=data.vmax)
    return cmap, norm, values


def is_dark(rgba) -> bool:
    """Whether white text reads better than black on this colour (perceived luminance below one half)."""
    return 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5


def draw_heatmap(ax, data: HeatmapData, *, show_x: bool = True, show_y: bool = True) -> None:
    """One metric panel onto ``ax``: values, colour bar (with clip arrows), phase boundaries as dashed lines."""
    cmap, norm, values = heatmap_scale(data)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    bar = ax.figure.colorbar(
        image, ax=ax, extend=extend[(data.clipped_low, data.clipped_high)], fraction=0.05, pad=0.02
    )
    bar.ax.tick_params(labelsize=7)
    bar.set_label(data.range_label, fontsize=8)
    if data.print_values:
        ny, nx = data.values.shape
        for i in range(ny):
            for j in range(nx):
                text = data.cell_text(i, j)
                if text:
                    shade = image.cmap(image.norm(data.values[i, j]))
                    ax.text(j, i, text, ha="center", va="center", fontsize=7 if nx * ny <= 36 else 6,
                            color="white" if is_dark(shade) else "black")
    if data.boundaries:
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection(data.boundaries, colors="black", linewidths=0.8, linestyles="dashed"))
    ax.set_title(data.title, fontsize=9)
    _axes_grid(ax, data.grid, show_x=show_x, show_y=show_y)


def draw_phase_map(
    ax, data: PhaseMapData, *, show_x: bool = True, show_y: bool = True, legend: bool = True, annotate: bool = True,
    title: str = "phase", highlight: np.ndarray | None = None,
) -> None:
    """The categorical phase map: one colour per phase, grey when unlabelled, solid boundaries, cell labels;
    hatched where seeds often change the label, pale and dotted where interpolated (an adaptive run's untrained
    cells), a dot where trained at the starting seeds only.

    highlight: (ny, nx) booleans of cells to frame (e.g. those whose label changed between two runs)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    colors = [MISSING_COLOR] + [data.colors[p] for p in data.phases]
    ax.imshow(
        data.codes + 1,
        cmap=ListedColormap(colors),
        vmin=-0.5,
        vmax=len(colors) - 0.5,
        aspect="auto",
        interpolation="nearest",
    )
    _draw_boundaries(ax, data.boundaries, width=1.6)
    ny, nx = data.codes.shape
    uncertain = data.uncertain
    for i, j in zip(*np.nonzero(uncertain)):  # labels that another set of seeds often changes: hatched
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="white", linewidth=0))
    interpolated, start_only = data.interpolated, data.start_seeds_only
    for i, j in zip(*np.nonzero(interpolated)):  # not trained: a paler colour, dotted (not the uncertain hatch)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white", alpha=INTERPOLATED_VEIL, linewidth=0))
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="..", edgecolor="#555555", linewidth=0))
    if start_only.any():  # trained at the starting seeds only: a small dot in the cell's top-right corner
        rows, cols = np.nonzero(start_only)
        ax.plot(cols + 0.33, rows - 0.3, linestyle="none", marker="o", markersize=3, color="black")
    if annotate and ny * nx <= MAX_ANNOTATED_CELLS:
        size = 7 if ny * nx <= 100 else 5
        for i in range(ny):
            for j in range(nx):
                label = data.labels[i, j]
                ax.text(
                    j,
                    i,
                    label if label is not None else "?",
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if label in ("I", "III", "IV-B") and not interpolated[i, j] else "black",
                )
    if legend:
        handles = [Patch(color=data.colors[p], label=f"{p}: {PHASE_KEY[p]} ({data.counts[p]})") for p in data.phases]
        if data.counts.get("unlabelled"):
            handles.append(Patch(color=MISSING_COLOR, label=f"unlabelled ({data.counts['unlabelled']})"))
        if uncertain.any():
            handles.append(Patch(facecolor="#808080", edgecolor="white", hatch="///",
                                 label=f"{UNCERTAIN_KEY} ({int(uncertain.sum())})"))
        if interpolated.any():
            handles.append(Patch(facecolor="#c0c0c0", edgecolor="#555555", hatch="..",
                                 label=f"{INTERPOLATED_KEY} ({int(interpolated.sum())})"))
        if start_only.any():
            handles.append(Line2D([], [], linestyle="none", marker="o", markersize=3, color="black",
                                  label=f"{START_SEEDS_KEY} ({int(start_only.sum())})"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    if highlight is not None:
        _frame_cells(ax, highlight)
    ax.set_title(title, fontsize=9)
    _axes_grid(ax, data.grid, show_x=show_x, show_y=show_y)


def _frame_cells(ax, mask: np.ndarray) -> None:
    """A thick magenta frame (a colour no phase has) inside each cell where ``mask`` is true."""
    from matplotlib.patches import Rectangle

    for i, j in zip(*np.nonzero(mask)):
        ax.add_patch(Rectangle((j - 0.44, i - 0.44), 0.88, 0.88, fill=False, edgecolor="#e0119d", linewidth=2.2))


def save_phase_map(cells: pd.DataFrame, stem: str, *, data: PhaseMapData | None = None) -> dict[str, str]:
    """The phase map alone, to ``stem``.png/.pdf; ``data``: phase_map_data(cells) when the caller has it already."""
    data = data or phase_map_data(cells)
    ny, nx = data.grid.shape
    width, height = max(6.5, 0.42 * nx + 4.2), max(3.5, 0.32 * ny + 1.6)
    fig = _new_figure(width, height)
    # Room in inches: 1.0 left (tick and axis labels), 2.8 right (the key), 0.9 bottom, 0.4 top.
    fig.subplots_adjust(left=1.0 / width, right=1 - 2.8 / width, bottom=0.9 / height, top=1 - 0.4 / height)
    draw_phase_map(fig.add_subplot(1, 1, 1), data)
    return _save(fig, stem)


def panel_set(cells: pd.DataFrame, color_ranges: dict | None = None, metrics: MetricSet = BUILTINS,
              mc_unit: str = MC_UNIT_DEFAULT) -> list[HeatmapData]:
    """HeatmapData of every panel of ``metrics`` (the built-ins: plot_data.PANELS), in order; ``color_ranges``:
    per metric, see plot_data; ``mc_unit``: the pairs' unit of mode connectivity (plot_data.panel_for_unit)."""
    color_ranges = color_ranges or {}
    panels = panel_specs(metrics)
    unknown = set(color_ranges) - {p.metric for p in panels}
    if unknown:
        raise ValueError(
            f"colour ranges given for {sorted(unknown)}, which are not panels: {[p.metric for p in panels]}"
        )
    return [heatmap_data(cells, spec.metric, color_range=color_ranges.get(spec.metric), metrics=metrics,
                         mc_unit=mc_unit) for spec in panels]


def panel_layout(panels: int) -> tuple[int, int]:
    """(rows, columns) for ``panels`` axes: at most PANELS_PER_ROW a row, the rows as even as they can be (9 panels
    are 3 x 3, not 4 + 4 + 1 with two thirds of the last row empty)."""
    rows = math.ceil(panels / PANELS_PER_ROW)
    return rows, math.ceil(panels / rows)


def save_panels(
    cells: pd.DataFrame,
    stem: str,
    *,
    color_ranges: dict | None = None,
    heatmaps: list[HeatmapData] | None = None,
    phase_map: PhaseMapData | None = None,
) -> dict[str, str]:
    """The paper's panel set (PANELS, plus any added metric's panel) and the phase map last, on shared axes, 4 to
    a row (2 rows x 4 for the built-ins), to ``stem``.png/.pdf.

    heatmaps, phase_map: panel_set(cells, color_ranges) and phase_map_data(cells) when the caller has them."""
    heatmaps = heatmaps or panel_set(cells, color_ranges)
    rows, cols = panel_layout(len(heatmaps) + 1)
    height = 4.25 * rows
    fig = _new_figure(21.0 * cols / PANELS_PER_ROW, height)
    axes = fig.subplots(rows, cols, squeeze=False)  # same categorical grid in every panel
    # The right margin holds the phase key beside the last panel (0.85 / 0.34 inches at the bottom / top).
    fig.subplots_adjust(left=0.05, right=0.84, bottom=0.85 / height, top=1 - 0.34 / height, wspace=0.3,
                        hspace=0.14 if rows <= 2 else 0.2)
    last = len(heatmaps)  # the phase map's slot
    for k, data in enumerate(heatmaps):
        # x labels under the panels with nothing drawn below them
        draw_heatmap(axes.flat[k], data, show_x=k + cols > last, show_y=k % cols == 0)
    # Phase labels in the cells only where the grid is small enough to read them (the separate map has them all).
    phase_map = phase_map or phase_map_data(cells)
    draw_phase_map(axes.flat[last], phase_map, show_x=True, show_y=last % cols == 0,
                   annotate=phase_map.codes.size <= MAX_PRINTED_CELLS)
    for ax in axes.flat[last + 1:]:
        ax.set_visible(False)
    return _save(fig, stem)


def save_curves(curves: list[CurveData], stem: str) -> dict[str, str] | None:
    """Train error along the Bezier curves of the given cells, one axes per cell; None when there are none."""
    if not curves:
        return None
    n = len(curves)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _new_figure(4.6 * cols, 3.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    fig.subplots_adjust(
        left=0.8 / (4.6 * cols),
        right=0.98,
        bottom=0.6 / (3.3 * rows),
        top=1 - 0.35 / (3.3 * rows),
        wspace=0.3,
        hspace=0.45,
    )
    for ax, data in zip(axes, curves):
        for s in data.series:
            mc = f", mc {s.mode_connectivity:.2g}" if s.mode_connectivity is not None else ""
            ax.plot(s.t, s.train_error, marker="o", markersize=3, label=f"seeds {s.seed_a}-{s.seed_b}{mc}")
        ax.set_title(data.title, fontsize=9)
        ax.set_xlabel("t along the curve")
        ax.set_ylabel("train error (%)")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    return _save(fig, stem)


def save_training_curves(histories: list[CellHistory], stem: str, *, formats=FORMATS) -> dict[str, str] | None:
    """Per cell one row: train loss (log scale when it spans > LOG_SCALE_SPAN) and test accuracy against the epoch, one line per seed (the
    same colour in both); None when there are no histories."""
    if not histories:
        return None
    from matplotlib.ticker import MaxNLocator

    rows = len(histories)
    fig = _new_figure(9.2, 3.0 * rows)
    axes = fig.subplots(rows, 2, squeeze=False)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.5 / (3.0 * rows), top=1 - 0.45 / (3.0 * rows), wspace=0.25,
                        hspace=0.6)
    for (loss_ax, acc_ax), data in zip(axes, histories):
        for i, s in enumerate(data.seeds):
            color = f"C{i % 10}"
            loss_ax.plot(s.epoch, s.train_loss, color=color, label=f"seed {s.seed}")
            acc_ax.plot(s.test_epoch, s.test_acc, color=color, marker="o", markersize=3, label=f"seed {s.seed}")
        losses = np.concatenate([s.train_loss for s in data.seeds])
        losses = losses[np.isfinite(losses)]
        if len(losses) and losses.min() > 0 and losses.max() / losses.min() > LOG_SCALE_SPAN:
            loss_ax.set_yscale("log")
        loss_ax.set_title(f"{data.title}: train loss", fontsize=9)
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("train loss (nats, SGD batches)")
        acc_ax.set_title(f"{data.title}: test accuracy", fontsize=9)
        acc_ax.set_xlabel("epoch")
        acc_ax.set_ylabel("test accuracy (fraction)")
        acc_ax.legend(fontsize=7)
        for ax in (loss_ax, acc_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, stem, formats)
