"""The paper's claims, checked on a labelled run: one declaration per claim, the rest iterates over them.
(Over ~400 lines: the table of claims is one declaration, with the verdict function of each beside it.)

Each :class:`Claim` names the figure(s) where Yang et al. (2021) make it, says in one sentence what it claims,
when it applies to a run (its load and temperature knobs, whether its labels are noisy) and how it is measured
on the labelled cells. ``evaluate_claims`` returns one record per claim:

    {"id", "claim", "figure", "applies", "holds" (true / false / null), "evidence" (the deciding numbers),
     "rule" (what "holds" needs), "summary" (plain words)}

``holds`` is null when the claim does not apply to the run (the summary says why) or when the run has no cells
to measure it on (e.g. no phase-IV cell for a claim about phase IV). Nothing here is tuned to a run: every
threshold is a constant below with its reason, the same for every run, and the measures use the phase labels
of :mod:`analysis.phases` as they are.

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

from analysis.plot_data import temperature_hot_when_large
from analysis.tables import format_value

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


@dataclass(frozen=True)
class Claim:
    id: str
    figure: str  # where the paper makes the claim
    text: str  # the claim, in the paper's terms
    rule: str  # what "holds" needs, in words
    applies: Callable[[RunFacts], str | None]  # None when the claim applies, else why not
    measure: Callable[[pd.DataFrame, RunFacts], Verdict]


# ------------------------------------------------------------------------------------------------------------
# Measures shared by the claims


def _num(cells: pd.DataFrame, col: str) -> np.ndarray:
    if col not in cells:
        return np.full(len(cells), np.nan)
    return pd.to_numeric(cells[col], errors="coerce").to_numpy(dtype=float)


def _hotness(cells: pd.DataFrame, facts: RunFacts) -> np.ndarray:
    """(n,) larger = hotter: the temperature value, negated for batch size (small batches are hot)."""
    t = _num(cells, "temperature_value")
    return t if temperature_hot_when_large(facts.temperature_name) else -t


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
        rho = spearman(_num(g, "load_value"), _num(g, metric))
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
    a, n = ordered_pairs(cells, WELL, POOR, same="temperature_value", position=_num(cells, "load_value"))
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
    loss, cls = _num(cells, "train_loss"), cells["sharpness_class"].to_numpy()
    sharp, flat = _median(loss[cls == "sharp"]), _median(loss[cls == "flat"])
    if not (math.isfinite(sharp) and math.isfinite(flat)) or flat <= 0:
        return Verdict(None, {}, "cannot be measured: the run needs both sharp and flat cells")
    ratio = sharp / flat
    ev = {"median_train_loss_sharp": round(sharp, 6), "median_train_loss_flat": round(flat, 6),
          "ratio": round(ratio, 3), "needed": LOSS_DROP_FACTOR}
    head = "holds" if ratio > LOSS_DROP_FACTOR else "does not hold"
    return Verdict(ratio > LOSS_DROP_FACTOR, ev, f"{head}: median train loss {sharp:.3g} nats in sharp cells vs "
                                                 f"{flat:.3g} in flat cells, {ratio:.3g}x (needs > {LOSS_DROP_FACTOR:g}x)")


def _hessian_sharp(cells, facts) -> Verdict:
    cls = cells["sharpness_class"].to_numpy()
    ev, ok = {}, []
    for col in ("log_hessian_top_eigenvalue", "log_hessian_trace"):
        v = _num(cells, col)
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
    """The verdict "the cell of the highest mean test accuracy has one of ``phases``"."""
    def verdict(cells, facts) -> Verdict:
        acc = _num(cells, "test_acc")
        if not np.isfinite(acc).any():
            return Verdict(None, {}, "cannot be measured: no cell has a test accuracy")
        i = int(np.nanargmax(acc))
        phase = cells["phase"].iloc[i] if isinstance(cells["phase"].iloc[i], str) else None
        ev = {"best_test_acc": round(float(acc[i]), 4), "load_value": float(cells["load_value"].iloc[i]),
              "temperature_value": float(cells["temperature_value"].iloc[i]), "phase": phase}
        where = (f"{facts.load_name} {format_value(ev['load_value'])}, {facts.temperature_name} "
                 f"{format_value(ev['temperature_value'])}")
        if phase is None:
            return Verdict(None, ev, f"cannot be decided: the best cell ({where}, test accuracy {acc[i]:.4g}) has "
                                     f"no phase")
        holds = phase in phases
        return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: the best mean test accuracy "
                                  f"{acc[i]:.4g} is at {where}, phase {phase}")

    return verdict


def _cka_tracks_accuracy(cells, facts) -> Verdict:
    iv = np.isin(_phases(cells), PHASE_IV)
    rho = spearman(_num(cells, "cka")[iv], _num(cells, "test_acc")[iv])
    ev = {"phase_iv_cells": int(iv.sum()), "spearman_cka_test_acc": None if math.isnan(rho) else round(rho, 3),
          "needed": MIN_RANK_CORRELATION}
    if math.isnan(rho):
        return Verdict(None, ev, "cannot be measured: fewer than 3 phase-IV cells with CKA and test accuracy")
    holds = rho >= MIN_RANK_CORRELATION
    return Verdict(holds, ev, f"{'holds' if holds else 'does not hold'}: Spearman correlation of CKA and test "
                              f"accuracy over {int(iv.sum())} phase-IV cells is {rho:.2f} (needs >= "
                              f"{MIN_RANK_CORRELATION})")


def _iii_flat_but_worse(cells, facts) -> Verdict:
    phases, cls = _phases(cells), cells["sharpness_class"].to_numpy()
    lam, acc = _num(cells, "log_hessian_top_eigenvalue"), _num(cells, "test_acc")
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
        acc, std, n = _num(line, "test_acc"), _num(line, "test_acc_std"), _num(line, "test_acc_n")
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
    phases, acc = _phases(cells), _num(cells, "test_acc")
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


def _mc_falls_with_noise(cells, facts) -> Verdict:
    return _trend_verdict(cells, "mode_connectivity", -1, "mode connectivity falls with label noise")


def _cka_falls_with_noise(cells, facts) -> Verdict:
    return _trend_verdict(cells, "cka", -1, "CKA falls with label noise")


def _trace_insensitive_to_noise(cells, facts) -> Verdict:
    cells = cells.reset_index(drop=True)
    v = _num(cells, "log_hessian_trace")

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


def _cka_rises_with_data(cells, facts) -> Verdict:
    return _trend_verdict(cells, "cka", +1, "CKA rises with the training-set size")


def _accuracy_rises_with_data(cells, facts) -> Verdict:
    return _trend_verdict(cells, "test_acc", +1, "test accuracy rises with the training-set size")


def _mc_falls_with_data(cells, facts) -> Verdict:
    return _trend_verdict(cells, "mode_connectivity", -1, "mode connectivity falls with the training-set size")


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
          _load_is("width"), _all_phases),
    Claim("tenfold-loss-drop", "Fig. 2, 4",
          "Train loss falls more than tenfold from the sharp phases (I, II) to the flat ones (III, IV).",
          f"median train loss of sharp cells > {LOSS_DROP_FACTOR:g} x that of flat cells",
          _always, _tenfold),
    Claim("hessian-larger-when-sharp", "Fig. 2",
          "The Hessian separates locally sharp from flat: λ_max and trace are larger in phases I and II.",
          "median log λ_max and median log trace larger in sharp than in flat cells",
          _always, _hessian_sharp),
    Claim("best-in-iv-b", "Fig. 2-7",
          "The best test accuracy is in phase IV-B (well connected, flat, similar).",
          "the cell with the highest mean test accuracy is IV-B",
          _always, _best_in(("IV-B",))),
    # The paper's words for Fig. 3 and 5 ("the test accuracy is maximized when the loss landscape is globally nice
    # and locally flat"), which do not name the CKA split of phase IV.
    Claim("best-in-phase-iv", "Fig. 3, 5",
          "The best test accuracy is where the landscape is globally nice and locally flat: phase IV (A or B).",
          "the cell with the highest mean test accuracy is IV-A or IV-B",
          _always, _best_in(PHASE_IV)),
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
          _load_is("label_noise"), _mc_falls_with_noise),
    Claim("cka-falls-with-label-noise", "Fig. 7",
          "More randomised labels make trained models less similar: CKA falls with label noise.",
          f"CKA falls with noise in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("label_noise"), _cka_falls_with_noise),
    Claim("trace-insensitive-to-label-noise", "Fig. 7",
          "Label noise barely changes the Hessian: temperature, not noise, sets the trace.",
          f"the log-trace range along the noise axis < {NOISE_VS_TEMPERATURE_RANGE:g} x its range along temperature",
          _load_is("label_noise"), _trace_insensitive_to_noise),
    Claim("cka-rises-with-data", "Fig. 6",
          "More data makes trained models more similar: CKA rises with the training-set size.",
          f"CKA rises with the training-set size in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("train_fraction"), _cka_rises_with_data),
    Claim("accuracy-rises-with-data", "Fig. 6",
          "Test accuracy rises with the training-set size.",
          f"test accuracy rises with the training-set size in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("train_fraction"), _accuracy_rises_with_data),
    Claim("mc-falls-with-data", "Fig. 6",
          "At a fixed width, more data makes the landscape more poorly connected (the white region shrinks).",
          f"mc falls with the training-set size in >= {MIN_AGREEING_FRACTION:.0%} of the temperature rows",
          _load_is("train_fraction"), _mc_falls_with_data),
]
CLAIM_BY_ID = {c.id: c for c in CLAIMS}


def evaluate_claims(cells: pd.DataFrame, facts: RunFacts | None = None) -> list[dict]:
    """One record per claim of CLAIMS for one diagram's labelled cells (see the module docstring)."""
    facts = facts or RunFacts.of(cells)
    cells = cells.reset_index(drop=True)
    out = []
    for claim in CLAIMS:
        why_not = claim.applies(facts)
        if why_not is not None:
            verdict = Verdict(None, {}, f"not applicable: {why_not}")
        else:
            verdict = claim.measure(cells, facts)
        out.append({"id": claim.id, "claim": claim.text, "figure": claim.figure, "applies": why_not is None,
                    "holds": verdict.holds, "evidence": verdict.evidence, "rule": claim.rule,
                    "summary": verdict.summary})
    return out
