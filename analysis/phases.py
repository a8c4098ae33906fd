"""Phase labels I, II, III, IV-A, IV-B for the cells of a run (method.md section 5).

Two transitions decide a cell's phase, a third value splits phase IV:

=================  ==============================  =====================================
                   poorly connected (mc < -thr)    well connected (mc >= -thr)
=================  ==============================  =====================================
locally sharp      I                               II
locally flat       III                             IV-A (lower CKA) / IV-B (higher CKA)
=================  ==============================  =====================================

How each class is decided (defaults in :class:`PhaseRules`, every one configurable):

**Sharp vs flat, by mean train loss, relative to the run.** A cell is locally sharp when its train loss
exceeds ``sharp_loss_ratio`` (10) times the run's *converged floor*, the ``loss_floor_quantile`` (5 %)
quantile of the cells' train losses, but never below ``loss_floor_min`` (1e-3 nats). The paper finds the
sharp-to-flat transition "coincides with a more than tenfold reduction" of train loss (method.md section 6,
claim 2), so the factor 10 is theirs; a ratio makes the rule scale-free (CIFAR ResNets converge to ~1e-3 nats,
small CPU models to ~1e-2). The quantile rather than the minimum keeps one lucky cell from moving the floor.
The floor minimum says that any train loss below 10 x 1e-3 = 0.01 nats counts as converged, even when the
best cells of a run reach 1e-6. Train loss decides rather than the Hessian because the Hessian is
estimated on a few hundred points (noisy) and grows at very large batch inside phase IV-A (the paper, Fig. 3),
where train loss stays at its floor. Seed noise tolerated: on the released ResNet18 results the
seed-to-seed coefficient of variation of train loss is below 0.5 (max/min ratio <= 2.7) in every cell near the
threshold, far inside the factor 10; a cell flips only if its mean lies within about a factor 2 of the threshold.

**Poorly vs well connected, by mean mode connectivity (mc, percentage points of training error).** A cell is
poorly connected when ``mc < -max(mc_threshold, mc_noise_z * sem)``, with ``sem`` the standard error of mc
over the cell's connected pairs (std / sqrt(n); zero with a single pair). ``mc_threshold`` = 1 pp: a barrier
smaller than 1 % of the training set is not "clearly negative" (method.md section 5); in the released results
well-connected flat cells have |mc| <= 0.1 pp and poorly connected ones reach -30 pp. The noise term (z = 2)
keeps a cell whose pairs disagree from being called poorly connected on one bad pair. mc > 0 (the curve
beats under-trained endpoints) counts as well connected, as in the paper. A run whose mc is measured on the train
loss (``metrics.curve.mc_on: loss``; the pairs' ``mc_unit`` is "nats") is judged against ``mc_loss_threshold``
(nats) instead: ``rules_for_mc_unit`` puts it in place of ``mc_threshold``.

**IV-A vs IV-B, by mean CKA among the phase-IV cells.** The paper calls it a smooth crossover, not a sharp
transition, so no absolute threshold is universal: the split is the ``cka_split_quantile`` (median) of the CKA
of the run's phase-IV cells; IV-B has CKA >= split (the more similar half). If those cells' CKA spans less than
``cka_min_range`` (0.05, about twice the typical seed-to-seed spread of a cell's CKA in the released results),
no crossover is resolved and all are IV-B (none is measurably less similar). ``cka_threshold`` replaces the
relative split by an absolute one. Cells within one CKA spread of the split can flip with seeds: that is what a
crossover looks like.

Ties: a value exactly at a threshold goes to the flat, well-connected, higher-CKA side. Missing values never
raise: the phase is null and ``phase_reason`` says which value was missing and which labels remain possible.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PHASES = ("I", "II", "III", "IV-A", "IV-B")

# Columns label_phases adds to the cells table.
LABEL_COLUMNS = [
    "sharpness_class",
    "sharpness_threshold",
    "connectivity_class",
    "connectivity_threshold",
    "cka_class",
    "cka_split",
    "phase",
    "phase_reason",
]


def _rule(default, doc: str, unit: str = ""):
    return field(default=default, metadata={"doc": doc, "unit": unit})


@dataclass(frozen=True)
class PhaseRules:
    """Thresholds of the phase labels; the module docstring explains each default and its noise tolerance."""

    sharp_loss_ratio: float = _rule(
        10.0, "a cell is locally sharp when its train loss exceeds this multiple of the run's converged floor", "x"
    )
    loss_floor_quantile: float = _rule(
        0.05, "quantile of the cells' train losses taken as the run's converged floor", "fraction"
    )
    loss_floor_min: float = _rule(1e-3, "the floor never goes below this train loss", "nats")
    loss_threshold: float | None = _rule(None, "absolute train-loss threshold; replaces ratio x floor when set", "nats")
    mc_threshold: float = _rule(
        1.0,
        "poorly connected when mode connectivity < -max(this, mc_noise_z x standard error over pairs)",
        "percentage points",
    )
    # A run with metrics.curve.mc_on: loss measures mc in nats of train loss (pairs.mc_unit); its barrier threshold
    # is this one. 0.01 nats is the loss resolution the sharpness rule already uses (sharp_loss_ratio x
    # loss_floor_min: a train loss below it counts as converged), so a smaller barrier is not "clearly negative".
    mc_loss_threshold: float = _rule(
        0.01, "as mc_threshold, for runs whose mode connectivity is measured on the train loss (mc_on: loss)", "nats"
    )
    mc_noise_z: float = _rule(2.0, "standard errors of mean mc (over a cell's pairs) a barrier must exceed", "")
    cka_split_quantile: float = _rule(0.5, "IV-B when CKA >= this quantile of the phase-IV cells' CKA", "fraction")
    cka_threshold: float | None = _rule(
        None, "absolute CKA split between IV-A and IV-B; replaces the quantile when set", ""
    )
    cka_min_range: float = _rule(
        0.05, "below this CKA range among phase-IV cells no IV-A/IV-B crossover is resolved (all IV-B)", ""
    )

    def __post_init__(self):
        # Every rule is a finite number (or unset): YAML reads 1e400 as inf, and an infinite threshold passes
        # the range checks below while silently putting every cell on one side.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(
                    f"phase rule {f.name}={value!r} is invalid: it must be a finite number"
                    + (" or none (unset)" if f.default is None else f" (default {f.default})")
                )
        checks = [
            ("sharp_loss_ratio", self.sharp_loss_ratio > 0, "> 0"),
            ("loss_floor_quantile", 0 <= self.loss_floor_quantile <= 1, "in [0, 1]"),
            ("loss_floor_min", self.loss_floor_min >= 0, ">= 0"),
            ("loss_threshold", self.loss_threshold is None or self.loss_threshold >= 0, ">= 0 or unset"),
            ("mc_threshold", self.mc_threshold >= 0, ">= 0 (it is a barrier height; the sign is applied for you)"),
            ("mc_loss_threshold", self.mc_loss_threshold >= 0, ">= 0 (a barrier height in nats)"),
            ("mc_noise_z", self.mc_noise_z >= 0, ">= 0"),
            ("cka_split_quantile", 0 <= self.cka_split_quantile <= 1, "in [0, 1]"),
            ("cka_min_range", self.cka_min_range >= 0, ">= 0"),
        ]
        for name, ok, want in checks:
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and math.isnan(value)):
                raise ValueError(f"phase rule {name}={value!r} is invalid: it must be {want}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object] | None) -> PhaseRules:
        """Rules from a dict of overrides, e.g. parsed ``--rule mc_threshold=0.5`` (strings are converted).

        Unknown names raise ValueError with the closest known name; "none"/"null"/"" unset optional rules.
        """
        if not mapping:
            return cls()
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for name, raw in mapping.items():
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown phase rule {name!r}.{hint} Known rules: {', '.join(known)}")
            values[name] = _convert(name, raw, known[name])
        return cls(**values)

    def describe(self) -> list[dict]:
        """[{name, value, default, unit, doc}] for reports."""
        return [
            {
                "name": f.name,
                "value": getattr(self, f.name),
                "default": f.default,
                "unit": f.metadata.get("unit", ""),
                "doc": f.metadata.get("doc", ""),
            }
            for f in dataclasses.fields(self)
        ]


def _convert(name: str, raw, f: dataclasses.Field):
    optional = f.default is None
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"", "none", "null"}):
        if optional:
            return None
        raise ValueError(f"phase rule {name} needs a number, got {raw!r}")
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"phase rule {name} needs a number, got {raw!r}") from None


# ---------------------------------------------------------------------------------------------
# Labelling


MC_UNIT_DEFAULT = "percentage points"  # pairs written before mc_unit existed measured mc on the train error


def mc_unit(pairs: pd.DataFrame) -> str:
    """The unit of the pairs' mode connectivity ("percentage points" or "nats", the pairs' ``mc_unit`` column;
    null in older runs: percentage points). ValueError when the pairs mix units (rows of two configs)."""
    units = set(pairs["mc_unit"].dropna()) if "mc_unit" in pairs.columns else set()
    if len(units) > 1:
        raise ValueError(f"the pairs measure mode connectivity in several units ({sorted(units)}); analyse the rows "
                         f"of one metrics.curve.mc_on setting")
    return units.pop() if units else MC_UNIT_DEFAULT


def rules_for_mc_unit(rules: PhaseRules, unit: str) -> PhaseRules:
    """The rules with the barrier threshold in ``unit``: mc_loss_threshold replaces mc_threshold for nats."""
    return dataclasses.replace(rules, mc_threshold=rules.mc_loss_threshold) if unit == "nats" else rules


def label_phases(cells: pd.DataFrame, rules: PhaseRules | Mapping | None = None, **overrides) -> pd.DataFrame:
    """A copy of ``cells`` with the columns of ``LABEL_COLUMNS`` added (see the module docstring).

    cells: one row per cell with at least ``train_loss``, ``mode_connectivity`` and ``cka`` (means over the
    cell's members), optionally ``mode_connectivity_std`` and ``mode_connectivity_n`` (for the noise term).
    rules: a PhaseRules, or a mapping of overrides; keyword overrides apply on top, e.g.
    ``label_phases(cells, mc_threshold=0.5)``.

    Added: sharpness_class ("sharp" | "flat"), sharpness_threshold (train loss, nats), connectivity_class
    ("poor" | "well"), connectivity_threshold (the barrier height in pp: poor when mc < -threshold),
    cka_class ("low" | "high", phase-IV cells only), cka_split, phase (one of PHASES or null), phase_reason.
    """
    rules = _resolve_rules(rules, overrides)
    for col in ("train_loss", "mode_connectivity", "cka"):
        if col not in cells.columns:
            raise ValueError(f"cells lack column {col!r}; build them with analysis.aggregate.aggregate_cells")
    out = cells.copy().reset_index(drop=True)
    train_loss = _numeric(out, "train_loss")
    mc = _numeric(out, "mode_connectivity")
    cka = _numeric(out, "cka")

    loss_thr = sharpness_threshold(train_loss, rules)
    sharp = np.where(np.isfinite(train_loss), train_loss > loss_thr, np.nan)

    mc_thr = connectivity_threshold(out, rules)
    poor = np.where(np.isfinite(mc), mc < -mc_thr, np.nan)

    in_iv = (sharp == 0) & (poor == 0)
    split, split_note = cka_split(cka[in_iv & np.isfinite(cka)], rules)

    classes_s, classes_c, classes_k, phases, reasons = [], [], [], [], []
    for i in range(len(out)):
        s_txt = _sharp_text(train_loss[i], loss_thr, sharp[i])
        c_txt = _conn_text(mc[i], mc_thr[i], poor[i])
        classes_s.append(None if np.isnan(sharp[i]) else ("sharp" if sharp[i] else "flat"))
        classes_c.append(None if np.isnan(poor[i]) else ("poor" if poor[i] else "well"))
        phase, k_class, k_txt = _phase_of(sharp[i], poor[i], cka[i], split, split_note)
        classes_k.append(k_class)
        phases.append(phase)
        reasons.append(
            "; ".join(t for t in (s_txt, c_txt, k_txt) if t) + _undecided_suffix(sharp[i], poor[i], phase)
        )
    out["sharpness_class"] = pd.array(classes_s, dtype="object")
    out["sharpness_threshold"] = loss_thr
    out["connectivity_class"] = pd.array(classes_c, dtype="object")
    out["connectivity_threshold"] = mc_thr
    out["cka_class"] = pd.array(classes_k, dtype="object")
    out["cka_split"] = [split if k is not None else math.nan for k in classes_k]
    out["phase"] = pd.array(phases, dtype="object")
    out["phase_reason"] = reasons
    return out


def _resolve_rules(rules, overrides) -> PhaseRules:
    if rules is None:
        rules = PhaseRules()
    elif isinstance(rules, Mapping):
        rules = PhaseRules.from_mapping(rules)
    elif not isinstance(rules, PhaseRules):
        raise TypeError(f"rules must be a PhaseRules or a mapping, got {type(rules).__name__}")
    if overrides:
        merged = {f.name: getattr(rules, f.name) for f in dataclasses.fields(rules)}
        base = PhaseRules.from_mapping(overrides)  # validates names and converts values
        merged.update({k: getattr(base, k) for k in overrides})
        rules = PhaseRules(**merged)
    return rules


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def sharpness_threshold(train_loss: np.ndarray, rules: PhaseRules) -> float:
    """Train loss (nats) above which a cell is locally sharp; NaN when no cell has a train loss."""
    if rules.loss_threshold is not None:
        return float(rules.loss_threshold)
    finite = train_loss[np.isfinite(train_loss)]
    if finite.size == 0:
        return math.nan
    floor = max(float(np.quantile(finite, rules.loss_floor_quantile)), rules.loss_floor_min)
    return rules.sharp_loss_ratio * floor


def connectivity_threshold(cells: pd.DataFrame, rules: PhaseRules) -> np.ndarray:
    """Per cell, the barrier height (pp) mean mc must exceed to count as poorly connected: (n_cells,)."""
    n = len(cells)
    std = _numeric(cells, "mode_connectivity_std") if "mode_connectivity_std" in cells else np.full(n, np.nan)
    count = _numeric(cells, "mode_connectivity_n") if "mode_connectivity_n" in cells else np.full(n, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = std / np.sqrt(count)
    sem = np.where(np.isfinite(sem), sem, 0.0)
    return np.maximum(rules.mc_threshold, rules.mc_noise_z * sem)


def cka_split(iv_cka: np.ndarray, rules: PhaseRules) -> tuple[float, str]:
    """(CKA split between IV-A and IV-B, how it was chosen) from the phase-IV cells' CKA values."""
    if rules.cka_threshold is not None:
        return float(rules.cka_threshold), f"absolute split {rules.cka_threshold:.3g}"
    if iv_cka.size == 0:
        return math.nan, "no phase-IV cell with CKA"
    spread = float(iv_cka.max() - iv_cka.min())
    if spread < rules.cka_min_range:
        return float(iv_cka.min()), (
            f"CKA of the {iv_cka.size} phase-IV cells spans {spread:.3g} < cka_min_range {rules.cka_min_range:.3g}: "
            "no crossover resolved, all IV-B"
        )
    split = float(np.quantile(iv_cka, rules.cka_split_quantile))
    return split, f"split {split:.3g} = {rules.cka_split_quantile:g}-quantile of {iv_cka.size} phase-IV cells"


def _phase_of(sharp, poor, cka, split, split_note) -> tuple[str | None, str | None, str]:
    """(phase, cka class, CKA part of the reason) for one cell's classes."""
    if np.isnan(sharp) or np.isnan(poor):
        return None, None, ""
    if sharp:
        return ("I" if poor else "II"), None, ""
    if poor:
        return "III", None, ""
    if not math.isfinite(cka):
        return None, None, "CKA missing"
    if not math.isfinite(split):
        return None, None, f"CKA {cka:.3g} but {split_note}"
    high = cka >= split
    cls = "high" if high else "low"
    return ("IV-B" if high else "IV-A"), cls, f"CKA {cka:.3g} {'>=' if high else '<'} {split:.3g}: {cls} ({split_note})"


def _sharp_text(loss, thr, sharp) -> str:
    if np.isnan(sharp):
        return "train loss missing" if not math.isfinite(loss) else "train-loss threshold undefined"
    return f"train loss {loss:.3g} {'>' if sharp else '<='} {thr:.3g}: {'sharp' if sharp else 'flat'}"


def _conn_text(mc, thr, poor) -> str:
    if np.isnan(poor):
        return "mode connectivity missing"
    return f"mc {mc:.3g} {'<' if poor else '>='} -{thr:.3g}: {'poorly' if poor else 'well'} connected"


def _undecided_suffix(sharp, poor, phase) -> str:
    """For a null phase, which labels the known values still allow."""
    if phase is not None:
        return ""
    if np.isnan(sharp) and np.isnan(poor):
        return " (phase undecided)"
    if np.isnan(sharp):
        return f" (phase undecided: {'I or III' if poor else 'II or IV'})"
    if np.isnan(poor):
        return f" (phase undecided: {'I or II' if sharp else 'III or IV'})"
    return " (phase undecided: IV-A or IV-B)"
