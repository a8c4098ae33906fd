"""The paper's claims, checked on a labelled run: one declaration per claim, the rest iterates over them.
(Over ~400 lines: the table of claims is one declaration, with the verdict function of each beside it.)

Each :class:`Claim` names the figure(s) where Yang et al. (2021) make it, says in one sentence what it claims,
when it applies to a run (its load and temperature knobs, whether its labels are noisy) and how it is measured
on the labelled cells. ``evaluate_claims`` returns one record per claim:

    {"id", "claim", "figure", "applies", "holds" (true / false / null), "p_holds" (or null), "status",
     "evidence" (the deciding numbers), "rule" (what "holds" needs), "summary" (plain words),
     "by_definition" (null, or what of the claim the phase rules make true by their own definition),
     "relaxation_of" (null, or the claim this one relaxes: never a headline in its place),
     "cells_used" (the cells it was measured on), "interpolated_cells_left_out"}

**Interpolated cells.** An adaptive run's untrained cells (``interpolated`` True: analysis.adaptive_cells) are
left out of every claim: a claim is measured on trained cells only, and one that only the interpolated cells
could decide is "unresolved", never holds or fails on interpolated values.

**Seed noise.** Given the run's cells re-aggregated on resampled seeds (``draws``: analysis.bootstrap, each
labelled with the run's phase rules), every claim is measured again on every draw. ``p_holds`` is the fraction of
draws in which it holds (a draw in which it cannot be measured counts as not holding). ``holds`` is true at
p >= HOLDS_AT_P (0.9), false at p <= FAILS_AT_P (0.1), null between, with ``status`` "unresolved" and the evidence
saying how many draws went which way. Without draws (no cell has two seeds, or resampling was switched off),
``holds`` is the verdict on the run's means, ``p_holds`` is null and the summary says seed noise was not measured.

``status`` is one of "holds", "does not hold", "unresolved", "cannot be measured", "not applicable". ``holds`` is
also null when the claim does not apply to the run (the summary says why), when the run has no cells to measure
it on (e.g. no phase-IV cell for a claim about phase IV), or when the measure itself cannot resolve it (a rank
correlation over fewer than MIN_CELLS_FOR_CORRELATION cells). Nothing here is tuned to a run: every threshold is
a constant below with its reason, the same for every run, and the measures use the phase labels of
:mod:`analysis.phases` as they are.

Layout claims are measured as a fraction of ordered cell pairs: e.g. "sharp phases lie hotter than flat ones"
counts, over every pair of one sharp and one flat cell at the same load, the pairs where the sharp one is the
hotter. An arrangement unrelated to the axis gives about one half.

Longer than ~400 lines on purpose: the registry and the small measure function of each claim belong together
(reading a claim's declaration next to its measure is the point), and no part is useful alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.adaptive_cells import trained_only
from analysis.aggregate import numeric_column
from analysis.tables import format_value
from workloads import knobs

# ------------------------------------------------------------------------------------------------------------
# Thresholds (the same for every run)

# A layout or trend claim holds when at least this fraction of its ordered pairs (or rows) agree with it: three in
# four. One half is what an arrangement unrelated to the axis gives; the authors' released map gives 0.91-1.0.
MIN_AGREEING_FRACTION = 0.75
# "Rising together": a Spearman rank correlation of at least this; 0 is no relation, 1 a monotone one.
MIN_RANK_CORRELATION = 0.5
# The paper's "more than tenfold reduction" of train loss from the sharp to the flat phases.
LOSS_DROP_FACTOR = 10.0
# "Each phase on several cells": a phase seen on one cell may be one noisy cell.
MIN_CELLS_PER_PHASE = 2
# Phase III "as flat as" IV-A: their median log lambda_max differ by less than this fraction of the gap between the
# sharp and the flat cells' medians.
SAME_FLATNESS_FRACTION = 0.5
# The Hessian "changes little" with label noise: its log-trace range along the noise axis is below this fraction of
# its range along the temperature axis (medians over rows and columns).
NOISE_VS_TEMPERATURE_RANGE = 0.5
# A rank correlation over fewer cells is unresolved: over 3 cells Spearman can only be +-1 or +-0.5, over 4 it
# takes 11 values, and one swapped pair moves it by 0.4-1.
MIN_CELLS_FOR_CORRELATION = 5
# Verdicts under seed noise: a claim holds when it holds in at least this fraction of the bootstrap draws, fails
# when it holds in at most FAILS_AT_P of them; between, it is unresolved (another set of seeds could decide it
# either way). 0.9 / 0.1 are the usual "nine times in ten" levels; a few hundred draws resolve p to about 0.02.
HOLDS_AT_P = 0.9
FAILS_AT_P = 0.1
# A test-accuracy dip must be deeper than this (fraction of the test set) and than 2 standard errors of the mean.
MIN_DIP_DEPTH = 0.005

PHASE_ORDER = ("I", "II", "III", "IV-A", "IV-B")
SHARP, FLAT = ("I", "II"), ("III", "IV-A", "IV-B")
POOR, WELL = ("I", "III"), ("II", "IV-A", "IV-B")
PHASE_IV = ("IV-A", "IV-B")


# ------------------------------------------------------------------------------------------------------------
# What a claim needs to know about the run


@dataclass(frozen=True)
class RunFacts:
    """The knobs of one diagram: load and temperature names, and the fixed label-noise fraction (0: clean)."""

    load_name: str
    temperature_name: str
    label_noise: float = 0.0

    @classmethod
    def of(cls, cells: pd.DataFrame, models: pd.DataFrame | None = None) -> RunFacts:
        """Facts of one diagram's cells; ``models`` (its models table) gives the realised label noise."""
        noise = 0.0
        load = str(cells["load_name"].iloc[0])
        if models is not None and load != "label_noise" and "label_noise_realised" in models:
            values = pd.to_numeric(models["label_noise_realised"], errors="coerce").dropna()
            noise = float(values.median()) if len(values) else 0.0
        return cls(load, str(cells["temperature_name"].iloc[0]), noise)


@dataclass(frozen=True)
class Verdict:
    holds: bool | None
    evidence: dict
    summary: str
    unresolved: bool = False  # the measure itself cannot decide (holds is then None)


@dataclass(frozen=True)
class Claim:
    id: str
    figure: str  # where the paper makes the claim
    text: str  # the claim, in the paper's terms
    rule: str  # what "holds" needs, in words
    applies: Callable[[RunFacts], str | None]  # None when the claim applies, else why not
    measure: Callable[[pd.DataFrame, RunFacts], Verdict]
    by_definition: str | None = None  # what of the claim the phase rules make true by their own definition
    relaxation_of: str | None = None  # the claim this one weakens: reported beside it, never in its place


# ------------------------------------------------------------------------------------------------------------
# Measures shared by the claims


def _hotness(cells: pd.DataFrame, facts: RunFacts) -> np.ndarray:
    """(n,) larger = hotter: the temperature value, negated for batch size (small batches are hot)."""
    t = numeric_column(cells, "temperature_value")
    return t if knobs.hot_when_large(facts.temperature_name) else -t


def _phases(cells: pd.DataFrame) -> np.ndarray:
    return np.array([p if isinstance(p, str) else None for p in cells["phase"]], dtype=object)


def ordered_pairs(cells: pd.DataFrame, first, second, *, same: str, position: np.ndarray) -> tuple[int, int]:
    """(pairs where the ``first``-phase cell has the larger ``position``, all pairs), over pairs of one cell with a
    phase in ``first`` and one with a phase in ``second`` that share ``same`` (a cells column)."""
    phases = _phases(cells)
    groups = cells[same].to_numpy()
    agree = total = 0
    for value in pd.unique(groups):
        here = groups == value
        a = position[here & np.isin(phases, first)]
        b = position[here & np.isin(phases, second)]
        if a.size and b.size:
            agree += int((a[:, None] > b[None, :]).sum())
            total += int(a.size * b.size)
    return agree, total


def spearman(x, y) -> float:
    """Spearman rank correlation of the finite pairs (average ranks for ties); NaN below 3 pairs or no spread."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    rx, ry = pd.Series(x[ok]).rank().to_numpy(), pd.Series(y[ok]).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def row_trends(cells: pd.DataFrame, metric: str) -> dict[str, float]:
    """Per temperature value, the Spearman correlation of ``metric`` with the load (rows with >= 3 values)."""
    out = {}
    for tv, g in cells.groupby("temperature_value"):
        rho = spearman(numeric_column(g, "load_value"), numeric_column(g, metric))
        if math.isfinite(rho):
            out[format_value(tv)] = round(rho, 3)
    return out


def _fraction_verdict(agree: int, total: int, what: str, empty: str) -> Verdict:
    if total == 0:
        return Verdict(None, {"agreeing": 0, "pairs": 0}, f"cannot be measured: {empty}")
    frac = agree / total
    holds = frac >= MIN_AGREEING_FRACTION
    evidence = {"agreeing": agree, "pairs": total, "fraction": round(frac, 3), "needed": MIN_AGREEING_FRACTION}
    head = "holds" if holds else "does not hold"
    return Verdict(holds, evidence, f"{head}: {frac:.0%} of {total} {what} (needs {MIN_AGREEING_FRACTION:.0%})")


def _trend(metric: str, sign: int, words: str) -> Callable[[pd.DataFrame, RunFacts], Verdict]:
    """The check of a claim that the load trend of ``metric`` has the sign ``sign`` (``words`` says so)."""
    return lambda cells, facts: _trend_verdict(cells, metric, sign, words)


def _trend_verdict(cells: pd.DataFrame, metric: str, sign: int, words: str) -> Verdict:
    """Holds when the load trend of ``metric`` has the sign ``sign`` in >= MIN_AGREEING_FRACTION of the rows."""
    rhos = row_trends(cells, metric)
    if not rhos:
        return Verdict(None, {"rows": 0}, f"cannot be measured: no temperature row has 3 cells with {metric}")
    agree = sum(1 for r in rhos.values() if r * sign > 0)
    frac = agree / len(rhos)
    holds = frac >= MIN_AGREEING_FRACTION
    evidence = {"spearman_by_temperature": rhos, "agreeing_rows": agree, "rows": len(rhos),
                "fraction": round(frac, 3), "needed": MIN_AGREEING_FRACTION}
    head = "holds" if holds else "does not hold"
    return Verdict(holds, evidence, f"{head}: {words} in {agree} of {len(rhos)} temperature rows "
                                    f"(Spearman over the load; needs {MIN_AGREEING_FRACTION:.0%})")


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


# ------------------------------------------------------------------------------------------------------------
# The claims' measures


def _sharp_is_hot(cells, facts) -> Verdict:
    a, n = ordered_pairs(cells, SHARP, FLAT, same="load_value", position=_hotness(cells, facts))
    return _fraction_verdict(a, n, "same-load pairs of a sharp (I/II) and a flat (III/IV) cell have the sharp one "
                                   "hotter", "no load value has both sharp and flat cells")


def _poor_is_small(cells, facts) -> Verdict:
    a, n = ordered_pairs(cells, WELL, POOR, same="temperature_value", position=numeric_column(cells, "load_value"))
    return _fraction_verdict(a, n, "same-temperature pairs of a poorly (I/III) and a well-connected (II/IV) cell "
                                   "have the poorly connected one narrower", "no temperature has both")


def _iv_b_is_hot(cells, facts) -> Verdict:
    a, n = ordered_pairs(cells, ("IV-B",), ("IV-A",), same="load_value", position=_hotness(cells, facts))
    return _fraction_verdict(a, n, "same-load pairs of a IV-A and a IV-B cell have the IV-B one hotter",
                             "no load value has both IV-A and IV-B cells")


def _all_phases(cells, facts) -> Verdict:
    counts = {p: int(np.sum(_phases(cells) == p)) for p in PHASE_ORDER}
    few = [p for p, c in counts.items() if c < MIN_CELLS_PER_PHASE]
    evidence = {"cells_per_phase": counts, "needed_per_phase": MIN_CELLS_PER_PHASE}
    shown = ", ".join(f"{p} {c}" for p, c in counts.items())
    if few:
        return Verdict(False, evidence, f"does not hold: {', '.join(few)} on fewer than {MIN_CELLS_PER_PHASE} "
                                        f"cells ({shown})")
    return Verdict(True, evidence, f"holds: every phase on at least {MIN_CELLS_PER_PHASE} cells ({shown})")


def _tenfold(cells, facts) -> Verdict:
    """Across the boundary: per column (one load), each adjacent pair of a sharp and a flat cell along the
    temperature axis; the claim holds when the median of their train-loss ratios exceeds LOSS_DROP_FACTOR.

    Not the class medians: "sharp" means a train loss above sharp_loss_ratio (10) x the run's floor, so the sharp
    cells' median lies above 10 x floor by the rules' definition, and the flat cells sit near the floor; their
    ratio exceeds ten nearly by construction. Reported beside, flagged so."""
    cells = cells.reset_index(drop=True)
    loss, cls = numeric_column(cells, "train_loss"), cells["sharpness_class"].to_numpy()
    ratios, examples = [], []
    for lv, idx in cells.groupby("load_value").indices.items():
        order = idx[np.argsort(_hotness(cells, facts)[idx], kind="stable")]
        for j, k in zip(order[:-1], order[1:]):
            if {cls[j], cls[k]} != {"sharp", "flat"}:
                continue
            sharp, flat = (j, k) if cls[j] == "sharp" else (k, j)
            if np.isfinite(loss[sharp]) and np.isfinite(loss[flat]) and loss[flat] > 0:
                ratios.append(loss[sharp] / loss[flat])
                examples.append({"load_value": float(lv), "sharp_train_loss": round(float(loss[sharp]), 6),
                                 "flat_train_loss": round(float(loss[flat]), 6),
                                 "ratio": round(float(loss[sharp] / loss[flat]), 3)})
    s_med, f_med = _median(loss[cls == "sharp"]), _median(loss[cls == "flat"])
    by_class = round(s_med / f_med, 3) if math.isfinite(s_med) and math.isfinite(f_med) and f_med > 0 else None
    ev = {"boundary_pairs": len(ratios), "needed": LOSS_DROP_FACTOR, "pairs": examples[:8],
          "class_median_ratio_by_definition": by_class}
    if not ratios:
        return Verdict(None, ev, "cannot be measured: no column (one load) has a sharp cell next to a flat one "
                                 "along the temperature axis")
    ratio = float(np.median(ratios))
    ev.update(median_ratio=round(ratio, 3), min_ratio=round(float(min(ratios)), 3),
              max_ratio=round(float(max(ratios)), 3))
    holds = ratio > LOSS_DROP_FACTOR
    return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: across the sharp/flat boundary train loss "
                              f"drops {ratio:.3g}x (median of {len(ratios)} adjacent cell pairs of one column, "
                              f"{min(ratios):.3g}-{max(ratios):.3g}x; needs > {LOSS_DROP_FACTOR:g}x)")


def _hessian_sharp(cells, facts) -> Verdict:
    cls = cells["sharpness_class"].to_numpy()
    ev, ok = {}, []
    for col in ("log_hessian_top_eigenvalue", "log_hessian_trace"):
        v = numeric_column(cells, col)
        s, f = _median(v[cls == "sharp"]), _median(v[cls == "flat"])
        if not (math.isfinite(s) and math.isfinite(f)):
            return Verdict(None, {}, "cannot be measured: the run needs both sharp and flat cells with a Hessian")
        ev[f"median_{col}_sharp"], ev[f"median_{col}_flat"] = round(s, 3), round(f, 3)
        ok.append(s > f)
    holds = all(ok)
    words = (f"median log λ_max {ev['median_log_hessian_top_eigenvalue_sharp']:.2f} (sharp) vs "
             f"{ev['median_log_hessian_top_eigenvalue_flat']:.2f} (flat), log trace "
             f"{ev['median_log_hessian_trace_sharp']:.2f} vs {ev['median_log_hessian_trace_flat']:.2f}")
    return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: {words} (natural logs; both must be larger "
                              f"in the sharp cells)")


def _best_in(phases: tuple[str, ...]) -> Callable[[pd.DataFrame, RunFacts], Verdict]:
    """The verdict "the best cell of ``phases`` beats the best labelled cell outside them", with the standard
    error of each cell's mean (test_acc_std / sqrt(test_acc_n)) in the evidence: how many standard errors the
    lead is tells a reader whether a lead of a few thousandths is a lead at all (the bootstrap decides p)."""
    def verdict(cells, facts) -> Verdict:
        acc = numeric_column(cells, "test_acc")
        if not np.isfinite(acc).any():
            return Verdict(None, {}, "cannot be measured: no cell has a test accuracy")
        labels = _phases(cells)
        top = int(np.nanargmax(acc))
        if labels[top] is None:
            return Verdict(None, {"best_test_acc": round(float(acc[top]), 4)},
                           f"cannot be decided: the best cell ({_where(cells, top, facts)}, test accuracy "
                           f"{acc[top]:.4g}) has no phase")
        with np.errstate(invalid="ignore", divide="ignore"):
            se = numeric_column(cells, "test_acc_std") / np.sqrt(numeric_column(cells, "test_acc_n"))
        inside = np.isin(labels, phases) & np.isfinite(acc)
        outside = ~np.isin(labels, phases) & (labels != None) & np.isfinite(acc)  # noqa: E711 (object array)
        named = "/".join(phases)
        best_in = _best_of(cells, acc, se, inside, facts)
        best_out = _best_of(cells, acc, se, outside, facts)
        ev = {"best_in_phase": best_in, "best_outside": best_out}
        if best_in is None:
            return Verdict(False, ev, f"does not hold: no {named} cell has a test accuracy (best cell "
                                      f"{_where(cells, top, facts)}, phase {labels[top]})")
        if best_out is None:
            return Verdict(True, ev, f"holds: every labelled cell is {named}")
        lead = best_in["test_acc"] - best_out["test_acc"]
        joint = math.hypot(best_in["se"], best_out["se"]) if best_in["se"] is not None and best_out["se"] is not None \
            else math.nan
        ev["lead"] = round(lead, 4)
        ev["lead_in_standard_errors"] = round(lead / joint, 2) if joint > 0 else None
        holds = lead > 0
        in_se = f", {lead / joint:+.1f} standard errors" if joint > 0 else ""
        return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: the best {named} cell "
                                  f"({best_in['where']}) has test accuracy {best_in['test_acc']:.4g}, the best other "
                                  f"({best_out['where']}, phase {best_out['phase']}) {best_out['test_acc']:.4g}: a "
                                  f"lead of {lead:+.4f}{in_se}")

    return verdict


def _where(cells: pd.DataFrame, i: int, facts: RunFacts) -> str:
    return (f"{facts.load_name} {format_value(cells['load_value'].iloc[i])}, {facts.temperature_name} "
            f"{format_value(cells['temperature_value'].iloc[i])}")


def _best_of(cells, acc, se, mask, facts) -> dict | None:
    """The cell of highest test accuracy among ``mask``: its accuracy, standard error, place and phase."""
    if not mask.any():
        return None
    i = int(np.flatnonzero(mask)[np.argmax(acc[mask])])
    return {"test_acc": round(float(acc[i]), 4), "se": round(float(se[i]), 4) if np.isfinite(se[i]) else None,
            "load_value": float(cells["load_value"].iloc[i]),
            "temperature_value": float(cells["temperature_value"].iloc[i]),
            "phase": cells["phase"].iloc[i], "where": _where(cells, i, facts)}


def _cka_tracks_accuracy(cells, facts) -> Verdict:
    iv = np.isin(_phases(cells), PHASE_IV)
    rho = spearman(numeric_column(cells, "cka")[iv], numeric_column(cells, "test_acc")[iv])
    ev = {"phase_iv_cells": int(iv.sum()), "spearman_cka_test_acc": None if math.isnan(rho) else round(rho, 3),
          "needed": MIN_RANK_CORRELATION}
    n = int((iv & np.isfinite(numeric_column(cells, "cka")) & np.isfinite(numeric_column(cells, "test_acc"))).sum())
    if n < 3:
        return Verdict(None, ev, f"cannot be measured: {n} phase-IV cells with CKA and test accuracy (a rank "
                                 f"correlation needs {MIN_CELLS_FOR_CORRELATION} to resolve)")
    if n < MIN_CELLS_FOR_CORRELATION:
        return Verdict(None, ev, f"unresolved: a rank correlation over {n} phase-IV cells (fewer than "
                                 f"{MIN_CELLS_FOR_CORRELATION}) can take only a few values"
                                 + (f" (here {rho:.2f})" if not math.isnan(rho) else ""), unresolved=True)
    if math.isnan(rho):
        return Verdict(None, ev, "cannot be measured: CKA or test accuracy does not vary over the phase-IV cells")
    holds = rho >= MIN_RANK_CORRELATION
    return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: Spearman correlation of CKA and test "
                              f"accuracy over {int(iv.sum())} phase-IV cells is {rho:.2f} (needs >= "
                              f"{MIN_RANK_CORRELATION})")


def _iii_flat_but_worse(cells, facts) -> Verdict:
    phases, cls = _phases(cells), cells["sharpness_class"].to_numpy()
    lam, acc = numeric_column(cells, "log_hessian_top_eigenvalue"), numeric_column(cells, "test_acc")
    iii, iva = phases == "III", phases == "IV-A"
    if not iii.any() or not iva.any():
        return Verdict(None, {}, "cannot be measured: the run needs phase-III and phase-IV-A cells")
    gap = abs(_median(lam[cls == "sharp"]) - _median(lam[cls == "flat"]))
    d_lam = abs(_median(lam[iii]) - _median(lam[iva]))
    acc_iii, acc_iva = _median(acc[iii]), _median(acc[iva])
    ev = {"median_test_acc_III": round(acc_iii, 4), "median_test_acc_IV_A": round(acc_iva, 4),
          "log_lambda_max_difference_III_IV_A": round(d_lam, 3), "log_lambda_max_gap_sharp_flat": round(gap, 3),
          "needed_fraction_of_gap": SAME_FLATNESS_FRACTION}
    if not all(math.isfinite(v) for v in (gap, d_lam, acc_iii, acc_iva)):
        return Verdict(None, ev, "cannot be measured: missing Hessian or accuracy values")
    same = d_lam < SAME_FLATNESS_FRACTION * gap
    holds = same and acc_iii < acc_iva
    return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: median test accuracy {acc_iii:.4g} in III vs "
                              f"{acc_iva:.4g} in IV-A; their log λ_max differ by {d_lam:.2f}, "
                              f"{'less' if same else 'not less'} than {SAME_FLATNESS_FRACTION:g} of the sharp/flat "
                              f"gap {gap:.2f}")


def _lines(cells: pd.DataFrame, facts: RunFacts):
    """Every row (fixed temperature, ordered by load) and column (fixed load, cold to hot) of the grid."""
    hot = _hotness(cells, facts)
    for tv, g in cells.groupby("temperature_value"):
        yield f"{facts.temperature_name} {format_value(tv)}", g.sort_values("load_value")
    for lv, g in cells.groupby("load_value"):
        yield f"{facts.load_name} {format_value(lv)}", g.iloc[np.argsort(hot[g.index.to_numpy()], kind="stable")]


def _dark_band(cells, facts) -> Verdict:
    cells = cells.reset_index(drop=True)
    crossing, dips, examples = 0, 0, []
    for name, line in _lines(cells, facts):
        cls = line["sharpness_class"].to_numpy()
        acc, std, n = (numeric_column(line, col) for col in ("test_acc", "test_acc_std", "test_acc_n"))
        edges = [j for j in range(len(cls) - 1) if {cls[j], cls[j + 1]} == {"sharp", "flat"}]
        if not edges:
            continue
        crossing += 1
        for j in edges:
            m = j if acc[j] <= acc[j + 1] else j + 1  # the lower of the two cells at the boundary
            left, right = acc[:m], acc[m + 1:]
            if not (np.isfinite(acc[m]) and np.isfinite(left).any() and np.isfinite(right).any()):
                continue
            depth = min(np.nanmax(left), np.nanmax(right)) - acc[m]
            se = std[m] / math.sqrt(n[m]) if np.isfinite(std[m]) and n[m] > 0 else 0.0
            if depth > max(MIN_DIP_DEPTH, 2 * se):
                dips += 1
                examples.append({"line": name, "dip_test_acc": round(float(acc[m]), 4), "depth": round(float(depth), 4)})
                break
    if crossing == 0:
        return Verdict(None, {"lines_crossing_boundary": 0}, "cannot be measured: no row or column crosses the "
                                                             "sharp/flat boundary")
    frac = dips / crossing
    holds = frac >= 0.5
    ev = {"lines_crossing_boundary": crossing, "lines_with_dip": dips, "fraction": round(frac, 3), "needed": 0.5,
          "min_depth": MIN_DIP_DEPTH, "dips": examples[:8]}
    return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: {dips} of {crossing} rows and columns that "
                              f"cross the sharp/flat boundary dip in test accuracy at it (lower than cells on both "
                              f"sides by > {MIN_DIP_DEPTH:g} and 2 standard errors; needs half)")


def _sharp_beats_iii(cells, facts) -> Verdict:
    phases, acc = _phases(cells), numeric_column(cells, "test_acc")
    agree = total = 0
    for lv in pd.unique(cells["load_value"]):
        col = cells["load_value"].to_numpy() == lv
        if not (np.isin(phases[col], ("III",)).any() and np.isin(phases[col], SHARP).any()):
            continue
        total += 1
        best_sharp = np.nanmax(np.where(col & np.isin(phases, SHARP), acc, np.nan))
        best_iii = np.nanmax(np.where(col & (phases == "III"), acc, np.nan))
        agree += int(best_sharp > best_iii)
    return _fraction_verdict(agree, total, "widths whose column holds phase III and a sharp phase have their best "
                                           "test accuracy in I/II", "no column holds both III and I/II")


def _trace_insensitive_to_noise(cells, facts) -> Verdict:
    cells = cells.reset_index(drop=True)
    v = numeric_column(cells, "log_hessian_trace")

    def ranges(by: str) -> list[float]:
        """Per group of ``by``, the range of the finite log traces (groups with >= 2 of them)."""
        out = []
        for idx in cells.groupby(by).indices.values():
            finite = v[idx][np.isfinite(v[idx])]
            if finite.size >= 2:
                out.append(float(np.ptp(finite)))
        return out

    along_noise, along_temp = ranges("temperature_value"), ranges("load_value")
    if not along_noise or not along_temp:
        return Verdict(None, {}, "cannot be measured: needs 2 noise levels and 2 temperatures with a Hessian trace")
    rn, rt = float(np.median(along_noise)), float(np.median(along_temp))
    holds = rn < NOISE_VS_TEMPERATURE_RANGE * rt
    ev = {"median_log_trace_range_along_noise": round(rn, 3), "median_log_trace_range_along_temperature": round(rt, 3),
          "needed_ratio_below": NOISE_VS_TEMPERATURE_RANGE}
    return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: log trace (natural log) varies by {rn:.2f} "
                              f"along the noise axis and {rt:.2f} along the temperature axis (medians; needs the "
                              f"first below {NOISE_VS_TEMPERATURE_RANGE:g} x the second)")


# ------------------------------------------------------------------------------------------------------------
# When a claim applies


def _always(facts: RunFacts) -> str | None:
    return None


def _load_is(name: str) -> Callable[[RunFacts], str | None]:
    def check(facts: RunFacts) -> str | None:
        return None if facts.load_name == name else f"the load is {facts.load_name}, the claim is about {name}"

    return check


def _noisy_width(facts: RunFacts) -> str | None:
    if facts.load_name != "width":
        return f"the load is {facts.load_name}, the claim is about width on noisy labels"
    if not facts.label_noise > 0:
        return "the labels are clean; the claim is about training on randomised labels (Fig. 4)"
    return None


# ------------------------------------------------------------------------------------------------------------
# The claims

CLAIMS: list[Claim] = [
    Claim("sharp-phases-hot", "Fig. 2 (also 3-7, App. D.5)",
          "The locally sharp phases (I, II: high train loss) lie at higher temperature than the flat ones (III, IV).",
          f">= {MIN_AGREEING_FRACTION:.0%} of same-load (sharp, flat) cell pairs have the sharp cell hotter",
          _always, _sharp_is_hot),
    Claim("poor-phases-narrow", "Fig. 2 (also 3-5)",
          "Small models are poorly connected: phases I and III lie at smaller width than II and IV.",
          f">= {MIN_AGREEING_FRACTION:.0%} of same-temperature (poor, well) cell pairs have the poor cell narrower",
          _load_is("width"), _poor_is_small),
    Claim("iv-b-hotter-than-iv-a", "Fig. 2",
          "Within phase IV, higher temperature raises CKA: IV-B lies hotter than IV-A.",
          f">= {MIN_AGREEING_FRACTION:.0%} of same-load (IV-B, IV-A) cell pairs have the IV-B cell hotter",
          _load_is("width"), _iv_b_is_hot),
    Claim("all-phases-present", "Fig. 2",
          "The width x temperature diagram shows all five phases.",
          f"each of I, II, III, IV-A, IV-B on >= {MIN_CELLS_PER_PHASE} cells",
          _load_is("width"), _all_phases,
          by_definition="IV-A and IV-B: the CKA split is the median of the phase-IV cells' CKA, so whenever that "
                        "CKA spans cka_min_range each holds about half of the phase-IV cells; only I, II, III and "
                        "phase IV as a whole are findings"),
    Claim("tenfold-loss-drop", "Fig. 2, 4",
          "Train loss falls more than tenfold from the sharp phases (I, II) to the flat ones (III, IV).",
          f"median train-loss ratio of adjacent sharp and flat cells of one column (along the temperature axis) > "
          f"{LOSS_DROP_FACTOR:g}", _always, _tenfold),
    Claim("hessian-larger-when-sharp", "Fig. 2",
          "The Hessian separates locally sharp from flat: λ_max and trace are larger in phases I and II.",
          "median log λ_max and median log trace larger in sharp than in flat cells",
          _always, _hessian_sharp),
    # "Globally nice" is well connected AND similar (paper section 1); "Phase IV-B is precisely the region with
    # globally nice landscapes, exhibiting the highest test accuracies" (section 3.1). So the paper's sentences for
    # Fig. 3-5 ("maximized when the loss landscape is globally nice and locally flat") are this claim too.
    Claim("best-in-iv-b", "Fig. 2-7",
          "The best test accuracy is in phase IV-B (well connected, flat, similar: globally nice and locally flat).",
          "the best IV-B cell has a higher mean test accuracy than the best labelled cell of any other phase",
          _always, _best_in(("IV-B",))),
    # A relaxation (it accepts IV-A, which the paper does not call globally nice): reported beside best-in-iv-b,
    # never a headline in its place.
    Claim("best-in-phase-iv", "Fig. 3, 5 (relaxed)",
          "Relaxed: the best test accuracy is in phase IV (A or B: well connected and flat, similar or not).",
          "the best IV-A or IV-B cell has a higher mean test accuracy than the best labelled cell of I, II, III",
          _always, _best_in(PHASE_IV), relaxation_of="best-in-iv-b"),
    Claim("cka-tracks-accuracy", "Fig. 2, 6",
          "In phase IV, CKA similarity and test accuracy rise together.",
          f"Spearman correlation of CKA and test accuracy over phase-IV cells >= {MIN_RANK_CORRELATION}",
          _always, _cka_tracks_accuracy),
    Claim("iii-flat-but-worse", "Fig. 2",
          "The Hessian alone does not predict accuracy: phase III is about as flat as IV-A, yet less accurate.",
          f"median test accuracy III < IV-A, and their median log λ_max differ by < {SAME_FLATNESS_FRACTION:g} x the "
          f"sharp/flat gap", _load_is("width"), _iii_flat_but_worse),
    Claim("dark-band-at-boundary", "Fig. 4",
          "With noisy labels, test accuracy dips (double descent) along the sharp/flat boundary.",
          "at least half of the rows and columns that cross the boundary dip in test accuracy at it",
          _noisy_width, _dark_band),
    Claim("sharp-beats-iii-on-noisy-labels", "Fig. 4",
          "With noisy labels, in a width column through phase III the best accuracy is in a sharp phase (I/II): "
          "training to zero loss can hurt when poorly connected.",
          f">= {MIN_AGREEING_FRACTION:.0%} of such columns have their best test accuracy in I/II",
          _noisy_width, _sharp_beats_iii),
    Claim("mc-falls-with-label-noise", "Fig. 7",
          "More randomised labels make the landscape more poorly connected: mc falls with label noise.",
          f"mc falls with noise (negative Spearman) in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("label_noise"), _trend("mode_connectivity", -1, "mode connectivity falls with label noise")),
    Claim("cka-falls-with-label-noise", "Fig. 7",
          "More randomised labels make trained models less similar: CKA falls with label noise.",
          f"CKA falls with noise in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("label_noise"), _trend("cka", -1, "CKA falls with label noise")),
    Claim("trace-insensitive-to-label-noise", "Fig. 7",
          "Label noise barely changes the Hessian: temperature, not noise, sets the trace.",
          f"the log-trace range along the noise axis < {NOISE_VS_TEMPERATURE_RANGE:g} x its range along temperature",
          _load_is("label_noise"), _trace_insensitive_to_noise),
    Claim("cka-rises-with-data", "Fig. 6",
          "More data makes trained models more similar: CKA rises with the training-set size.",
          f"CKA rises with the training-set size in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("train_fraction"), _trend("cka", +1, "CKA rises with the training-set size")),
    Claim("accuracy-rises-with-data", "Fig. 6",
          "Test accuracy rises with the training-set size.",
          f"test accuracy rises with the training-set size in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("train_fraction"), _trend("test_acc", +1, "test accuracy rises with the training-set size")),
    Claim("mc-falls-with-data", "Fig. 6",
          "At a fixed width, more data makes the landscape more poorly connected (the white region shrinks).",
          f"mc falls with the training-set size in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("train_fraction"),
          _trend("mode_connectivity", -1, "mode connectivity falls with the training-set size")),
]
CLAIM_BY_ID = {c.id: c for c in CLAIMS}


def evaluate_claims(cells: pd.DataFrame, facts: RunFacts | None = None, *,
                    draws: list[pd.DataFrame] | None = None, no_draws: str = "not resampled") -> list[dict]:
    """One record per claim of CLAIMS for one diagram's labelled cells (see the module docstring).

    draws: the cells re-aggregated on resampled seeds and labelled with the same rules (analysis.bootstrap), or
    None; no_draws: why there are none, for the summaries (e.g. "no cell has two seeds to resample")."""
    facts = facts or RunFacts.of(cells)
    every_cell = cells.reset_index(drop=True)
    cells = trained_only(every_cell)
    left_out = len(every_cell) - len(cells)
    draws = [trained_only(d) for d in draws or ()]
    out = []
    for claim in CLAIMS:
        why_not = claim.applies(facts)
        if why_not is not None:
            point, held = Verdict(None, {}, f"not applicable: {why_not}"), None
        else:
            point = _on_trained(claim, cells, every_cell, left_out, facts)
            held = [claim.measure(d, facts).holds for d in draws] if draws and point.holds is not None else None
        holds, p, status, evidence, summary = _decide(point, held, applies=why_not is None, no_draws=no_draws)
        out.append({"id": claim.id, "claim": claim.text, "figure": claim.figure, "applies": why_not is None,
                    "holds": holds, "p_holds": p, "status": status, "evidence": evidence, "rule": claim.rule,
                    "summary": summary, "by_definition": claim.by_definition, "relaxation_of": claim.relaxation_of,
                    "cells_used": len(cells) if why_not is None else 0, "interpolated_cells_left_out": left_out})
    return out


def _on_trained(claim: Claim, trained: pd.DataFrame, every_cell: pd.DataFrame, left_out: int,
                facts: RunFacts) -> Verdict:
    """The claim measured on the trained cells. When they cannot measure it but the grid with its interpolated
    cells could, the cells it needs are interpolated only: unresolved (a claim never rests on them alone)."""
    point = (claim.measure(trained, facts) if len(trained)
             else Verdict(None, {}, "cannot be measured: no trained cell"))
    if point.holds is not None or point.unresolved or not left_out:
        return point
    if claim.measure(every_cell, facts).holds is None:
        return point
    return Verdict(None, {**point.evidence, "interpolated_cells_left_out": left_out},
                   f"unresolved: the cells that would decide it are interpolated only (not trained; {left_out} "
                   f"interpolated cells are left out of the claims); trained cells alone: "
                   f"{point.summary.removeprefix('cannot be measured: ')}", unresolved=True)


def verdict_of_p(p: float) -> bool | None:
    """True at p >= HOLDS_AT_P, False at p <= FAILS_AT_P, None (unresolved) between."""
    return True if p >= HOLDS_AT_P else (False if p <= FAILS_AT_P else None)


def _decide(point: Verdict, held: list | None, *, applies: bool, no_draws: str):
    """(holds, p_holds, status, evidence, summary) of one claim from its verdict on the run's means and, when
    there are draws, its verdict (True / False / None) on each draw."""
    if point.holds is None:
        status = "not applicable" if not applies else ("unresolved" if point.unresolved else "cannot be measured")
        return None, None, status, point.evidence, point.summary
    head, _, body = point.summary.partition(": ")
    if held is None:
        status = "holds" if point.holds else "does not hold"
        evidence = {**point.evidence, "resampling": {"draws": 0, "why": no_draws}}
        return point.holds, None, status, evidence, f"{status} ({no_draws}: seed noise not measured): {body}"
    n, k = len(held), sum(1 for h in held if h is True)
    failed = sum(1 for h in held if h is False)
    p = k / n
    holds = verdict_of_p(p)
    status = {True: "holds", False: "does not hold", None: "unresolved"}[holds]
    resampling = {"draws": n, "held": k, "failed": failed, "unmeasured": n - k - failed, "p_holds": round(p, 3),
                  "rule": f"holds at p >= {HOLDS_AT_P:g}, does not hold at p <= {FAILS_AT_P:g}, unresolved between"}
    if holds is None:
        resampling["why_unresolved"] = (f"holds in {k} of {n} seed resamplings (p = {p:.2f}), between "
                                        f"{FAILS_AT_P:g} and {HOLDS_AT_P:g}")
    on_means = "" if head == status else f"; on the run's means it {head}"
    summary = f"{status} (p = {p:.2f} over {n} seed resamplings{on_means}): {body}"
    return holds, round(p, 3), status, {**point.evidence, "resampling": resampling}, summary
