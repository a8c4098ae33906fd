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

from analysis.tables import format_value
from workloads import knobs

# A sharp cell whose train loss still fell by more than this fraction over the last tenth of its epochs (the models
# table's train_loss_drop) was stopped too early; at or below it the loss had levelled off. In pilots on this
# project's CPU demo, levelled-off cells moved by -0.03..+0.03 from one tenth of training to the next (SGD noise
# between epochs), cells still converging by 0.05..0.4.
STILL_FALLING = 0.05

# The paper's readings (its section 4), worded once: the findings of a run below and the placement of a
# practitioner's own models (analysis/placement.py, `landscape diagnose`) both say them.
READS_POOR_CONNECTIVITY = "The paper reads this as a model too small for the data or data of low quality (noisy labels)."
READS_UNFINISHED = "The paper reads this as training that did not finish: train longer or decay the learning rate."
READS_LOW_CKA = ("The paper reads low CKA together with mc ~ 0 and a small Hessian as a lack of signal in the data: "
                 "more high-quality data should help")
LOWER_TEMPERATURE = "a larger batch size, a smaller learning rate or weight decay"  # whichever knob sets it


@dataclass
class Finding:
    # connectivity | under-training | sgd-noise | capacity | convergence (cause undetermined) | similarity | best |
    # loss-drop | completeness
    topic: str
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


def _hotness(cells: pd.DataFrame) -> pd.Series:
    """Per cell, larger = hotter (the temperature value, negated for batch size)."""
    t = pd.to_numeric(cells["temperature_value"], errors="coerce")
    return t if knobs.hot_when_large(cells["temperature_name"].iloc[0]) else -t


def convergence_findings(cells: pd.DataFrame) -> list[Finding]:
    """Why cells did not reach the bottom of a minimum (locally sharp, or clearly positive mc), and what helps.

    The paper reads high train loss and positive mc as training that did not reach a minimum. Three causes call
    for different fixes, told apart by the cell's training curve (``train_loss_drop``) and its column:
    - under-training: the loss was still falling at the end (drop > STILL_FALLING): train longer;
    - SGD noise: the loss had levelled off while a colder cell of the same load reaches the flat floor: cool down
      towards it (never advised beyond the grid's coldest value);
    - capacity: levelled off and no colder cell of the same load is flat: a larger model or cleaner data, not
      a lower temperature.
    Without a training curve (the authors' released results) the first two cannot be told apart and the finding
    says so.
    """
    load, temp = cells["load_name"].iloc[0], cells["temperature_name"].iloc[0]
    thr = pd.to_numeric(cells["connectivity_threshold"], errors="coerce")
    mc = pd.to_numeric(cells["mode_connectivity"], errors="coerce")
    sharp = (cells["sharpness_class"] == "sharp").to_numpy()
    positive = (mc > thr).to_numpy()
    concerned = cells[sharp | positive]
    if concerned.empty:
        return []
    hot = _hotness(cells)
    flat = (cells["sharpness_class"] == "flat").to_numpy()
    drop = pd.to_numeric(cells.get("train_loss_drop", pd.Series(float("nan"), index=cells.index)), errors="coerce")
    groups: dict[str, list] = {"under-training": [], "sgd-noise": [], "capacity": [], "convergence": [],
                               "endpoints": []}
    colder_flat: dict[int, float] = {}
    for i in concerned.index:
        same_load = (cells["load_value"] == cells.at[i, "load_value"]).to_numpy()
        colder = cells[same_load & flat & (hot < hot[i]).to_numpy()]
        if math.isfinite(drop[i]) and drop[i] > STILL_FALLING:
            groups["under-training"].append(i)
        elif not sharp[i]:  # flat, yet the curve beats its endpoints
            groups["endpoints"].append(i)
        elif len(colder):
            # The hottest colder flat cell: the smallest step towards the floor.
            nearest = colder.loc[_hotness(colder).idxmax()] if len(colder) > 1 else colder.iloc[0]
            colder_flat[i] = float(nearest["temperature_value"])
            groups["sgd-noise" if math.isfinite(drop[i]) else "convergence"].append(i)
        else:
            groups["capacity"].append(i)

    def where(idx) -> str:
        return _fmt_cells(cells.loc[idx])

    cooler = knobs.cooler(temp)
    out = []
    if groups["under-training"]:
        idx = groups["under-training"]
        drops = drop[idx]
        out.append(Finding(
            "under-training",
            f"{len(idx)} cells did not reach the bottom of a minimum because training stopped too early: their train "
            f"loss was still falling by {drops.min():.0%}-{drops.max():.0%} over the last tenth of the epochs "
            f"(train_loss_drop > {STILL_FALLING:.0%}), e.g. {load}, {temp} = {where(idx)}. Train longer (more "
            f"epochs) first: until the loss levels off, this run cannot tell whether the temperature holds it up.",
            _cells(cells.loc[idx])))
    if groups["sgd-noise"]:
        idx = groups["sgd-noise"]
        targets = sorted({format_value(colder_flat[i]) for i in idx})
        out.append(Finding(
            "sgd-noise",
            f"{len(idx)} cells levelled off above the converged floor (train loss no longer falling), while colder "
            f"cells of the same {load} reach it: the paper reads this as SGD noise keeping training from the "
            f"bottom of a minimum, e.g. {load}, {temp} = {where(idx)}. Cool down ({cooler}: {temp} "
            f"{' or '.join(targets)} is flat at the same {load}) or decay the learning rate.", _cells(cells.loc[idx])))
    if groups["capacity"]:
        idx = groups["capacity"]
        out.append(Finding(
            "capacity",
            f"{len(idx)} cells are locally sharp at every temperature of the grid for their {load} (no colder cell "
            f"of the same {load} is flat, and the loss had levelled off or is not recorded), e.g. {load}, {temp} = "
            f"{where(idx)}: a lower temperature within this grid does not help; the model is too small for the "
            f"data (or the data too noisy) to fit it. A larger model (or cleaner data) should.",
            _cells(cells.loc[idx])))
    if groups["endpoints"]:
        idx = groups["endpoints"]
        out.append(Finding(
            "convergence",
            f"{len(idx)} flat cells have clearly positive mode connectivity (the curve between two models finds lower "
            f"error than both), e.g. {load}, {temp} = {where(idx)}: their train loss is at the floor, yet the models "
            f"sit short of the bottom of their basin. {READS_UNFINISHED}", _cells(cells.loc[idx])))
    if groups["convergence"]:
        idx = groups["convergence"]
        targets = sorted({format_value(colder_flat[i]) for i in idx})
        out.append(Finding(
            "convergence",
            f"{len(idx)} cells did not reach the bottom of a minimum (locally sharp, or the curve beats its "
            f"endpoints), e.g. {load}, {temp} = {where(idx)}, while colder cells of the same {load} do ({temp} "
            f"{' or '.join(targets)}). The tables hold no training curve (train_loss_drop) to tell too few steps "
            f"from SGD noise: train longer if the loss was still falling, else cool down ({cooler}).",
            _cells(cells.loc[idx])))
    return out


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
            f"{len(cells)} cells, e.g. {load}, {temp} = {_fmt_cells(poor)}. {READS_POOR_CONNECTIVITY}"
        )
        ok_from = _lowest_load_all_well_connected(cells)
        if ok_from is not None:
            msg += f" In this run every cell with {load} >= {format_value(ok_from)} is well connected."
        out.append(Finding("connectivity", msg, _cells(poor)))

    out += convergence_findings(cells)

    iv_a = cells[cells["phase"] == "IV-A"]
    if len(iv_a):
        hot = _hotness(cells)
        can_heat = bool((hot[(cells["phase"] == "IV-A").to_numpy()] < hot.max()).any())
        hotter = knobs.hotter(temp) if can_heat else None
        more = f"larger {load} and {hotter}" if hotter else f"larger {load}"
        out.append(
            Finding(
                "similarity",
                f"{len(iv_a)} cells are well connected and flat but less similar (phase IV-A, lower CKA), e.g. "
                f"{_fmt_cells(iv_a)}. {READS_LOW_CKA}; within phase IV, {more} raised CKA in the paper.",
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
