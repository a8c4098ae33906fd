"""The paper's practitioner guidance (method.md section 6.7) applied to a labelled run.

The paper's three rules of thumb, as read here:
1. Negative mode connectivity suggests low data quality or a model too small for the data.
2. Large positive mode connectivity, or a large Hessian (locally sharp, high train loss), suggests training did
   not reach the bottom of a minimum.
3. Small CKA suggests poor generalisation; with mc ~ 0 and a small Hessian (phase IV-A), a lack of signal
   in the data: more high-quality data should help.
Each :class:`Finding` names the cells it is about, so a report can point at them. Also reported: where the best
test accuracy lies (the paper: phase IV-B) and whether train loss drops tenfold from sharp to flat cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.plot_data import temperature_hot_when_large
from analysis.tables import format_value

_COOLER = {
    "batch_size": "a larger batch size",
    "learning_rate": "a smaller learning rate",
    "lr": "a smaller learning rate",
    "weight_decay": "a smaller weight decay",
}


@dataclass
class Finding:
    topic: str  # connectivity | convergence | similarity | best | loss-drop | completeness
    message: str
    cells: list[tuple[float, float]] = field(default_factory=list)  # (load_value, temperature_value)


def _cells(df: pd.DataFrame) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in zip(df["load_value"], df["temperature_value"])]


def _fmt_cells(df: pd.DataFrame, limit: int = 6) -> str:
    items = [f"({format_value(a)}, {format_value(b)})" for a, b in _cells(df)]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _lowest_load_all_well_connected(cells: pd.DataFrame) -> float | None:
    """Smallest load value from which on every labelled cell is well connected (None if there is none)."""
    labelled = cells[cells["connectivity_class"].notna()]
    loads = sorted(set(labelled["load_value"].astype(float)))
    answer = None
    for v in reversed(loads):
        if (labelled.loc[labelled["load_value"] >= v, "connectivity_class"] == "well").all():
            answer = v
        else:
            break
    return answer if answer is not None and answer != loads[0] else None


def practitioner_guidance(cells: pd.DataFrame) -> list[Finding]:
    """Findings for labelled cells of one diagram (output of ``label_phases``), most actionable first."""
    if cells.empty:
        return []
    load = cells["load_name"].iloc[0]
    temp = cells["temperature_name"].iloc[0]
    out: list[Finding] = []

    poor = cells[cells["connectivity_class"] == "poor"]
    if len(poor):
        msg = (
            f"Negative mode connectivity (a barrier between independently trained models) in {len(poor)} of "
            f"{len(cells)} cells, e.g. {load}, {temp} = {_fmt_cells(poor)}. The paper reads this as a model too "
            f"small for the data or data of low quality (noisy labels)."
        )
        ok_from = _lowest_load_all_well_connected(cells)
        if ok_from is not None:
            msg += f" In this run every cell with {load} >= {format_value(ok_from)} is well connected."
        out.append(Finding("connectivity", msg, _cells(poor)))

    thr = pd.to_numeric(cells["connectivity_threshold"], errors="coerce")
    mc = pd.to_numeric(cells["mode_connectivity"], errors="coerce")
    sharp = cells[cells["sharpness_class"] == "sharp"]
    positive = cells[(mc > thr).to_numpy()]
    if len(sharp) or len(positive):
        cooler = _COOLER.get(temp, "a lower temperature")
        parts = []
        if len(sharp):
            parts.append(f"{len(sharp)} cells are locally sharp (high train loss), e.g. {_fmt_cells(sharp)}")
        if len(positive):
            parts.append(
                f"{len(positive)} cells have clearly positive mode connectivity (the curve beats its "
                f"endpoints), e.g. {_fmt_cells(positive)}"
            )
        out.append(
            Finding(
                "convergence",
                "; ".join(parts) + f". The paper reads both as training that did not reach the bottom of a minimum: "
                f"train longer, use learning-rate decay, or cool down ({cooler}).",
                sorted(set(_cells(sharp)) | set(_cells(positive))),
            )
        )

    iv_a = cells[cells["phase"] == "IV-A"]
    if len(iv_a):
        hotter = "smaller batch sizes" if not temperature_hot_when_large(temp) else f"larger {temp}"
        out.append(
            Finding(
                "similarity",
                f"{len(iv_a)} cells are well connected and flat but less similar (phase IV-A, lower CKA), e.g. "
                f"{_fmt_cells(iv_a)}. The paper reads low CKA together with mc ~ 0 and a small Hessian as a lack of "
                f"signal in the data: more high-quality data should help; within phase IV, larger {load} and "
                f"{hotter} raised CKA in the paper.",
                _cells(iv_a),
            )
        )

    acc = pd.to_numeric(cells["test_acc"], errors="coerce")
    if acc.notna().any():
        best = cells.loc[acc.idxmax()]
        phase = best["phase"] if isinstance(best["phase"], str) else "unlabelled"
        agrees = "as the paper reports" if phase == "IV-B" else "unlike the paper, which finds it in phase IV-B"
        out.append(
            Finding(
                "best",
                f"Best mean test accuracy {best['test_acc']:.4g} at {load} = {format_value(best['load_value'])}, "
                f"{temp} = {format_value(best['temperature_value'])}, in phase {phase} ({agrees}).",
                [(float(best["load_value"]), float(best["temperature_value"]))],
            )
        )

    loss = pd.to_numeric(cells["train_loss"], errors="coerce")
    sharp_loss = loss[cells["sharpness_class"] == "sharp"].median()
    flat_loss = loss[cells["sharpness_class"] == "flat"].median()
    if math.isfinite(sharp_loss) and math.isfinite(flat_loss) and flat_loss > 0:
        ratio = sharp_loss / flat_loss
        verdict = "more than tenfold, as in the paper" if ratio > 10 else "less than the paper's tenfold"
        out.append(
            Finding(
                "loss-drop",
                f"Median train loss {sharp_loss:.3g} in sharp cells vs {flat_loss:.3g} in flat cells: a {ratio:.3g}x "
                f"drop ({verdict}).",
            )
        )

    if "complete" in cells:
        incomplete = cells[~cells["complete"].fillna(False).astype(bool)]
        if len(incomplete):
            example = incomplete["members_missing"].dropna()
            why = f" (e.g. {example.iloc[0]})" if len(example) else ""
            out.append(
                Finding(
                    "completeness",
                    f"{len(incomplete)} of {len(cells)} cells average over fewer members or metrics than "
                    f"expected{why}; "
                    f"see the members_missing column. Their means and labels rest on less evidence.",
                    _cells(incomplete),
                )
            )
    unlabelled = cells[cells["phase"].isna()]
    if len(unlabelled):
        out.append(
            Finding(
                "completeness",
                f"{len(unlabelled)} cells have no phase because a deciding value is missing, e.g. "
                f"{_fmt_cells(unlabelled, 3)}: {unlabelled['phase_reason'].iloc[0]}.",
                _cells(unlabelled),
            )
        )
    return out
