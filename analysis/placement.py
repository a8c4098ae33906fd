"""Where a practitioner's own trained models sit on the paper's taxonomy (`landscape diagnose`), from numbers.

Input: one row per model and one per connected pair, with the columns of the ``models`` and ``pairs`` tables
(analysis/tables.py: train_loss, test_acc, hessian_top_eigenvalue, ... / mode_connectivity, cka, l2_distance,
each row with its ``status``). Nothing here imports torch: workloads/diagnosis.py measures, this module decides.
The group is aggregated like one cell of a sweep (``analysis.aggregate.aggregate_cells``) and labelled with
the sweep's own rules (``analysis.phases.label_phases``), so a diagnosis and a phase diagram never disagree
about the same numbers.

Thresholds. A group of models is one cell without a run around it: the two run-relative rules of phases.py
have nothing to be relative to, so both become absolute (a rule given explicitly always wins):

- sharp vs flat: ``loss_threshold`` when set, else ``sharp_loss_ratio`` x ``loss_floor_min`` = 10 x 1e-3 =
  0.01 nats, the lowest threshold the relative rule can draw. It is also what that rule draws on the authors'
  released ResNet18 results (0.0106 nats: 10 x their 5% train-loss quantile, 1.06e-3), so a group is sharp when
  it has not fitted its training set as well as the paper's converged models did;
- poorly vs well connected: exactly as in a sweep (mc < -max(``mc_threshold``, ``mc_noise_z`` x SE));
- IV-A vs IV-B: ``cka_threshold`` when set, else ``RELEASED_CKA_SPLIT``, the split the default rules draw on
  the released results (the median CKA of their 63 phase-IV cells; tests/analysis/test_placement.py recomputes it
  from the archive). CKA levels depend on the data and the model (MNIST-1D MLPs span 0.3-0.99 in this
  project's pilots), and the paper calls IV-A -> IV-B a smooth crossover: the call names the split it used,
  and a sweep's own split (``landscape analyze``) is the better reference when there is one.

Confidence. Each deciding mean is compared with its threshold in standard errors of the mean over the group's
members (sample std, ddof=1, over models or pairs, / sqrt(n)): at least ``CLEAR_Z`` = 2 is "clear",
less is "borderline" (another draw of seeds could flip it). A number from one member (mode connectivity and
CKA of two checkpoints: one pair) has no spread to judge: "no spread", and the call is only as good as that one
pair. Pairs that share a model are not independent, so with 3+ checkpoints the standard error of a pair metric
is somewhat optimistic; with 2-3 members the standard deviation itself is rough. The call's confidence is its
weakest decision's. Beside it, ``phase_confidence``: the fraction of seed resamplings of the group (its models
drawn with replacement, each pair going with its two models: analysis.bootstrap, as `landscape analyze` does per
cell) that give the same phase, and ``phase_runner_up``, the most frequent other label.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.aggregate import CELL_COLUMNS, MODEL_METRICS, PAIR_METRICS, aggregate_cells
from analysis.bootstrap import labelled_draws, phase_confidence
from analysis.guidance import LOWER_TEMPERATURE, READS_LOW_CKA, READS_POOR_CONNECTIVITY, READS_UNFINISHED
from analysis.phases import PhaseRules, label_phases
from analysis.schemas import field_units

# The IV-A/IV-B split of the authors' released results under the default rules (0.69428 there), rounded.
RELEASED_CKA_SPLIT = 0.694
CLEAR_Z = 2.0  # standard errors between a deciding mean and its threshold for a "clear" call
# The group as one cell of the aggregation (it has no load or temperature of its own).
GROUP_CELL = {"load_name": "group", "load_value": 0.0, "temperature_name": "group", "temperature_value": 0.0}
CONFIDENCE_ORDER = ("clear", "no spread", "borderline")  # weakest last

# What each phase means and what the paper's guidance (its section 4) says to do about it, for one group of
# models (no neighbouring cells to compare with, no training curve): one entry per phase.
PHASE_MEANING = {
    "I": "poorly connected and locally sharp: high train loss and a barrier between the models",
    "II": "well connected but locally sharp: the models did not reach the bottom of a minimum",
    "III": "locally flat but poorly connected: the training set is fitted, yet a barrier separates the models",
    "IV-A": "well connected and flat, with lower similarity (CKA) between the models",
    "IV-B": "well connected, flat and similar: the globally nice landscape where the paper finds the best "
            "test accuracy",
}
NOT_CONVERGED = (
    "A large train loss (locally sharp) means training did not reach the bottom of a minimum. Checkpoints come "
    "without a training curve to tell too few steps from SGD noise: train longer if the loss was still falling, "
    f"else cool down ({LOWER_TEMPERATURE}) or decay the learning rate."
)
PHASE_GUIDANCE = {
    "I": [f"Negative mode connectivity (a barrier between the models). {READS_POOR_CONNECTIVITY} A larger model (or cleaner data) should "
          f"connect the models.", NOT_CONVERGED + " If cooling down does not lower it either, the model is too small for "
          "the data (or the data too noisy) to fit it: a larger model should."],
    "II": [NOT_CONVERGED],
    "III": [f"Negative mode connectivity (a barrier between the models). {READS_POOR_CONNECTIVITY} A larger model (or cleaner data) should "
            f"connect the models. In poorly connected landscapes the paper finds that training to zero loss can hurt "
            f"generalisation (with noisy labels; in translation, where dropout and early stopping help)."],
    "IV-A": [f"{READS_LOW_CKA}. Within phase IV a larger model and a higher temperature (smaller batch, larger "
             f"learning rate) raised CKA in the paper."],
    "IV-B": ["Nothing in the taxonomy calls for a change: the paper finds the best test accuracy in this phase."],
}
POSITIVE_MC = ("Mode connectivity is clearly positive: the curve between the models finds lower training error "
               f"than both, so they sit short of the bottom of their basin. {READS_UNFINISHED}")
SHOWN_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "hessian_top_eigenvalue", "hessian_trace",
                 "mode_connectivity", "cka", "l2_distance")


@dataclass
class Decision:
    """One transition of the taxonomy as decided for the group.

    mean, std, n: the deciding quantity over the group's models (train loss) or pairs (mc, CKA).
    threshold: the value ``mean`` is compared with (for mc the negative barrier height), threshold_source: why it
    is that. standard_errors: |mean - threshold| / (std / sqrt(n)); None without a spread (n < 2 or std 0).
    """

    transition: str  # sharp vs flat | poorly vs well connected | IV-A vs IV-B
    quantity: str  # train_loss | mode_connectivity | cka
    unit: str
    mean: float
    std: float | None
    n: int
    threshold: float
    threshold_source: str
    outcome: str  # sharp | flat | poor | well | low | high
    standard_errors: float | None
    confidence: str  # clear | borderline | no spread


@dataclass
class Placement:
    """The group's phase, the numbers that decided it and what to do; ``to_dict`` is the --json structure."""

    phase: str | None
    phase_reason: str
    meaning: str
    confidence: str  # clear | borderline | no spread | undecided
    confidence_note: str
    decisions: list[Decision]
    guidance: list[str]
    metrics: dict  # name -> {"mean", "std", "n", "unit"}
    members: dict  # models, models_ok, pairs, pairs_ok, complete, missing
    rules: list[dict] = field(default_factory=list)  # PhaseRules.describe() of the rules used
    # The fraction of seed resamplings of the group (analysis.bootstrap: its models resampled with replacement,
    # pairs going with their models) that give it this phase, and the most frequent other label; None when the
    # group has fewer than two models to resample.
    phase_confidence: float | None = None
    phase_runner_up: str | None = None

    def to_dict(self) -> dict:
        return json_ready(dataclasses.asdict(self))


def absolute_rules(rules: PhaseRules | Mapping | None = None) -> tuple[PhaseRules, dict[str, str]]:
    """(the rules with absolute loss and CKA thresholds, where each threshold came from) for one group."""
    if not isinstance(rules, PhaseRules):
        rules = PhaseRules.from_mapping(rules or {})  # ValueError naming an unknown rule or a bad value
    sources = {}
    changes = {}
    if rules.loss_threshold is None:
        changes["loss_threshold"] = rules.sharp_loss_ratio * rules.loss_floor_min
        sources["loss_threshold"] = (f"sharp_loss_ratio {rules.sharp_loss_ratio:g} x loss_floor_min "
                                     f"{rules.loss_floor_min:g} nats (one group has no run-relative floor)")
    else:
        sources["loss_threshold"] = "the loss_threshold rule"
    if rules.cka_threshold is None:
        changes["cka_threshold"] = RELEASED_CKA_SPLIT
        sources["cka_threshold"] = "the IV-A/IV-B split of the authors' released results under the default rules"
    else:
        sources["cka_threshold"] = "the cka_threshold rule"
    return dataclasses.replace(rules, **changes), sources


def place_group(models: list[dict], pairs: list[dict], rules: PhaseRules | Mapping | None = None) -> Placement:
    """Place one group of models of one architecture on the taxonomy (see the module docstring).

    models: one dict per model with ``status`` ("ok" or why not) and the models-table metrics; pairs: one per
    measured pair with ``status``, ``seed_a``/``seed_b`` (indices into ``models``) and the pair metrics.
    rules: phase-rule overrides (``--rule``); the loss and CKA thresholds are made absolute by ``absolute_rules``.
    """
    used, sources = absolute_rules(rules)
    model_frame, pair_frame = _group_tables(models, pairs)
    cell = aggregate_cells(model_frame, pair_frame, expected_seeds=range(len(models)))
    labelled = label_phases(cell, used)
    row = labelled.iloc[0]
    draws, _ = labelled_draws(model_frame, pair_frame, cell, used)
    (frequency,), (runner_up,) = phase_confidence(labelled, draws)
    phase = row["phase"] if isinstance(row["phase"], str) else None
    decisions = _decisions(row, used, sources)
    confidence, note = _confidence(decisions, phase)
    metrics = {m: {"mean": _num(row[m]), "std": _num(row[f"{m}_std"]), "n": int(row[f"{m}_n"]),
                   "unit": _UNITS.get(m, "")} for m in SHOWN_METRICS}
    members = {"models": len(models), "models_ok": int(row["n_models_ok"]), "pairs": len(pairs),
               "pairs_ok": int(row["n_pairs_ok"]), "complete": bool(row["complete"]),
               "missing": row["members_missing"] if isinstance(row["members_missing"], str) else None}
    return Placement(
        phase=phase, phase_reason=str(row["phase_reason"]), meaning=PHASE_MEANING.get(phase, "undecided"),
        confidence=confidence, confidence_note=note, decisions=decisions,
        guidance=_guidance(phase, row, decisions), metrics=metrics, members=members, rules=used.describe(),
        phase_confidence=round(frequency, 3) if math.isfinite(frequency) else None, phase_runner_up=runner_up,
    )


_UNITS = {**field_units("models"), **field_units("pairs")}


def _group_tables(models: list[dict], pairs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(models, pairs) frames of the group as one cell of a sweep; models are numbered 0..n-1 as seeds."""
    model_rows = [{**GROUP_CELL, "seed": i, **{m: r.get(m) for m in MODEL_METRICS}, "status": r.get("status")}
                  for i, r in enumerate(models)]
    pair_rows = [{**GROUP_CELL, "seed_a": int(r["seed_a"]), "seed_b": int(r["seed_b"]), "status": r.get("status"),
                  **{m: r.get(m) for m in PAIR_METRICS}} for r in pairs]
    model_frame = pd.DataFrame(model_rows, columns=CELL_COLUMNS + ["seed", "status", *MODEL_METRICS])
    pair_frame = pd.DataFrame(pair_rows, columns=CELL_COLUMNS + ["seed_a", "seed_b", "status", *PAIR_METRICS])
    for frame, metrics in ((model_frame, MODEL_METRICS), (pair_frame, PAIR_METRICS)):
        for m in metrics:
            frame[m] = pd.to_numeric(frame[m], errors="coerce").astype(float)
    return model_frame, pair_frame


def _num(value) -> float | None:
    value = float(value) if value is not None else math.nan
    return value if math.isfinite(value) else None


def _decision(transition, quantity, row, threshold, source, outcome) -> Decision:
    mean, std, n = _num(row[quantity]), _num(row[f"{quantity}_std"]), int(row[f"{quantity}_n"])
    sem = std / math.sqrt(n) if std is not None and n >= 2 else None
    if sem is None or sem == 0:
        z, level = None, "no spread"
    else:
        z = abs(mean - threshold) / sem
        level = "clear" if z >= CLEAR_Z else "borderline"
    return Decision(transition, quantity, _UNITS.get(quantity, ""), mean, std, n, float(threshold), source, outcome,
                    z, level)


def _decisions(row, rules: PhaseRules, sources: dict) -> list[Decision]:
    """The decisions that made the phase: sharpness and connectivity (when measured), CKA inside phase IV."""
    out = []
    if isinstance(row["sharpness_class"], str):
        out.append(_decision("sharp vs flat", "train_loss", row, row["sharpness_threshold"],
                             sources["loss_threshold"], row["sharpness_class"]))
    if isinstance(row["connectivity_class"], str):
        barrier = float(row["connectivity_threshold"])
        noise = barrier > rules.mc_threshold
        source = (f"mc_noise_z {rules.mc_noise_z:g} x the standard error of mc over the pairs" if noise
                  else f"mc_threshold {rules.mc_threshold:g} pp")
        out.append(_decision("poorly vs well connected", "mode_connectivity", row, -barrier, source,
                             row["connectivity_class"]))
    if isinstance(row["cka_class"], str):
        out.append(_decision("IV-A vs IV-B", "cka", row, row["cka_split"], sources["cka_threshold"],
                             row["cka_class"]))
    return out


def _confidence(decisions: list[Decision], phase: str | None) -> tuple[str, str]:
    """(the weakest decision's confidence, a sentence saying why) or ("undecided", why) without a phase."""
    if phase is None:
        return "undecided", "a deciding value is missing (see the reason)"
    level = max((d.confidence for d in decisions), key=CONFIDENCE_ORDER.index)
    weak = [d for d in decisions if d.confidence == level]
    names = ", ".join(d.quantity.replace("_", " ") for d in weak)
    if level == "clear":
        return level, f"every deciding mean lies at least {CLEAR_Z:g} standard errors from its threshold"
    if level == "borderline":
        return level, (f"{names} lies within {CLEAR_Z:g} standard errors of its threshold: other seeds could "
                       f"give another phase")
    if any(d.n >= 2 for d in weak):
        return level, f"{names} is the same for every member: no spread to judge the call by"
    members = " and ".join(f"{d.n} {'pair' if d.quantity in ('mode_connectivity', 'cka') else 'model'}"
                           for d in weak)
    return level, (f"{names} comes from {members}, with no spread to judge it by; with 3 or more checkpoints "
                   f"(3 pairs) the call gets a confidence")


def _guidance(phase: str | None, row, decisions: list[Decision]) -> list[str]:
    if phase is None:
        return [f"No phase: {row['phase_reason']}. Measure the missing values (see the members line) to place "
                f"the models."]
    out = list(PHASE_GUIDANCE[phase])
    mc = _num(row["mode_connectivity"])
    barrier = float(row["connectivity_threshold"])
    if mc is not None and mc > barrier and phase != "I" and phase != "III":
        out.append(POSITIVE_MC)
    borderline = [d for d in decisions if d.confidence == "borderline"]
    if borderline:
        out.append("The call is borderline (" + ", ".join(d.transition for d in borderline) + "): more "
                   "checkpoints (seeds) would settle it.")
    return out


def json_ready(obj):
    """A copy of dicts / lists / numbers that json.dumps writes as strict JSON: NaN and infinities become null,
    numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ---------------------------------------------------------------------------------------------------------
# Text for a human


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit and unit != "fraction" else text


def placement_text(placement: Placement, header: list[str] = ()) -> str:
    """The diagnosis as lines for a terminal: phase, deciding numbers with thresholds, confidence, guidance."""
    p = placement
    lines = list(header)
    lines.append(f"phase: {p.phase or 'undecided'} ({p.meaning})")
    lines.append(f"  because: {p.phase_reason}")
    lines.append(f"confidence: {p.confidence}: {p.confidence_note}")
    if p.phase_confidence is not None:
        lines.append(f"  seed resamplings: {p.phase_confidence:.0%} give this phase"
                     + (f", runner-up {p.phase_runner_up}" if p.phase_runner_up else ""))
    lines.append("deciding numbers:")
    for d in p.decisions:
        spread = (f" ± {_fmt(d.std)} (std over {d.n})" if d.std is not None else f" (from {d.n}, no spread)")
        z = f", {d.standard_errors:.3g} standard errors away" if d.standard_errors is not None else ""
        lines.append(f"  {d.transition}: {d.quantity} {_fmt(d.mean, d.unit)}{spread} vs threshold "
                     f"{_fmt(d.threshold, d.unit)} -> {d.outcome} [{d.confidence}{z}]")
        lines.append(f"      threshold: {d.threshold_source}")
    lines.append("all numbers (mean ± std over models, or over pairs):")
    for name, m in p.metrics.items():
        spread = f" ± {_fmt(m['std'])}" if m["std"] is not None else ""
        lines.append(f"  {name:<23} {_fmt(m['mean'], m['unit'])}{spread}  (n={m['n']})")
    members = p.members
    lines.append(f"members: {members['models_ok']}/{members['models']} models, {members['pairs_ok']}/"
                 f"{members['pairs']} pairs measured" + (f" ({members['missing']})" if members["missing"] else ""))
    lines.append("guidance (the paper's, section 4):")
    lines += [f"  - {g}" for g in p.guidance]
    return "\n".join(lines)
