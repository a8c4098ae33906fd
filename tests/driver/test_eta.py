"""The progress view's ETA (SweepState.eta_seconds, EtaCountdown) and its terminal drawing (tqdm).

Every time comes from a fake clock handed to SweepState: nothing here sleeps to measure time.
"""

from __future__ import annotations

import io
import os
import threading

import pytest

from orchestrator.config import parse_config
from orchestrator.planning.jobs import mkey, model_job
from orchestrator.driver.state import EtaCountdown, SweepState


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def two_running_models(clock: Clock) -> SweepState:
    """4 models (costs 2, 2, 1, 1) and 2 pairs (0.5 each), 2 slots; m0 and m1 run from the clock's now on
    (10 epochs each), nothing has finished."""
    state = SweepState(slots=2, clock=clock, costs={"m0": 2.0, "m1": 2.0, "m2": 1.0, "m3": 1.0, "p0": 0.5, "p1": 0.5})
    state.models.keys, state.pairs.keys = ["m0", "m1", "m2", "m3"], ["p0", "p1"]
    for trial, key in (("a", "m0"), ("b", "m1")):
        state.trial_started(trial, epochs=10)
        state.models.live[trial] = key
    return state


def test_the_eta_is_known_from_the_first_epoch_report_before_any_job_finishes():
    clock = Clock()
    state = two_running_models(clock)
    clock.t += 3
    assert state.eta_seconds() is None  # nothing measured yet: "?"
    clock.t += 1
    state.epoch_reported("a", 1)  # m0: epoch 1 of 10 took 4 s (from its start)
    # m0 projected: 4 s + 9 epochs x 4 s = 40 s for cost 2 -> 20 s per unit of cost.
    # Left: m0 9 x 4 = 36 s; m1 (no report) 2 x 20 - 4 s run = 36 s; pending m2, m3, p0, p1: 3 units x 20 = 60 s.
    assert state.eta_seconds() == pytest.approx(max(36, (36 + 36 + 60) / 2))  # 66 s, over 2 slots
    clock.t += 3
    state.epoch_reported("a", 2)  # epoch 2 took 3 s: the seconds per epoch are now those between the reports
    # m0 projected: 7 + 8 x 3 = 31 s -> 15.5 s per unit. Left: m0 24 s; m1 31 - 7 = 24 s; pending 3 x 15.5.
    assert state.eta_seconds() == pytest.approx((24 + 24 + 3 * 15.5) / 2)
    clock.t += 2  # no new report: the running trials' time left shrinks with the time since their last one
    assert state.eta_seconds() == pytest.approx((22 + 22 + 3 * 15.5) / 2)


def test_one_epoch_report_counts_the_epochs_own_seconds_when_the_worker_measured_them():
    """The time from a trial's start to its first report also holds a Ray worker's start (once per worker:
    later trials reuse it): projecting every epoch from it, and counting it in the rate, put the first ETA of
    `landscape run smoke` at 3x the time left."""
    clock = Clock()
    state = two_running_models(clock)
    clock.t += 4
    state.epoch_reported("a", 1, seconds=1.5)
    # m0 projected from its first epoch's start: 1.5 + 9 x 1.5 = 15 s for cost 2 -> 7.5 per unit.
    # Left: m0 9 x 1.5 = 13.5 s; m1 2 x 7.5 - 4 = 11 s; pending 3 units x 7.5.
    assert state.eta_seconds() == pytest.approx((13.5 + 11 + 3 * 7.5) / 2)
    clock.t += 2
    state.epoch_reported("a", 2, seconds=1.5)  # from the second report on: the time between reports
    assert state.trials["a"].first_seconds == 1.5
    # Projected: 2 + 1.5 + 8 x 2 = 19.5 s -> 9.75 per unit. Left: m0 16 s; m1 19.5 - 6 s; pending 3 x 9.75.
    assert state.eta_seconds() == pytest.approx((16 + 13.5 + 3 * 9.75) / 2)


def test_finished_jobs_and_running_trials_share_one_rate():
    clock = Clock()
    state = two_running_models(clock)
    state.models.live.pop("b")
    state.trial_stopped("b")
    state.models.outcome["m1"], state.models.seconds["m1"] = "ok", 50.0  # measured: 25 s per unit
    clock.t += 5
    state.epoch_reported("a", 1)  # m0 projected 5 + 9 x 5 = 50 s: the rate stays (50 + 50) / (2 + 2) = 25
    left_m0, pending = 45.0, 25.0 * (1 + 1 + 0.5 + 0.5)
    assert state.eta_seconds() == pytest.approx((left_m0 + pending) / 2)


def test_a_resumed_trial_and_a_cohort_trial():
    clock = Clock()
    state = SweepState(slots=1, clock=clock, costs={"m0": 1.0, "m1": 3.0, "m2": 4.0})
    state.models.keys = ["m0", "m1", "m2"]
    # A cohort of m0 and m1: one trial, both keys running, one clock; it resumed from epoch 5 of 10.
    state.trial_started("c", epochs=10)
    state.models.live.update({("c", 0): "m0", ("c", 1): "m1"})
    clock.t += 6
    state.epoch_reported("c", 6)  # its first epoch in this attempt: 6 s
    # Projected: 6 + 4 x 6 = 30 s for the cohort's cost 4 -> 7.5 per unit; left: the cohort 24 s (counted
    # once: it is one trial), m2 pending 4 x 7.5 = 30 s.
    assert state.eta_seconds() == pytest.approx(24 + 30)
    clock.t += 100  # long past its estimate: the trial is finishing, not at a negative time left
    assert state.eta_seconds() == pytest.approx(30)


def test_a_running_jobs_epochs_are_scaled_to_the_whole_job_by_their_share_of_its_cost():
    """A job also evaluates its model and measures its Hessian after its epochs: on `landscape run smoke`
    the epochs are 10-45 % of a job, and the ETA from the epochs alone was 7x short."""
    clock = Clock()
    state = SweepState(slots=1, clock=clock, costs={"m0": 2.0, "m1": 2.0}, epoch_shares={"m0": 0.5, "m1": 0.5})
    state.models.keys = ["m0", "m1"]
    state.trial_started("a", epochs=4)
    state.models.live["a"] = "m0"
    clock.t += 3
    state.epoch_reported("a", 1, seconds=2.0)
    # Epochs: 2 + 3 x 2 = 8 s, half of the job: 16 s for cost 2 -> 8 per unit. Left: m0 16 - 2 = 14 s
    # (its rest of the epochs and everything after them), m1 2 x 8 = 16 s, on one slot.
    assert state.eta_seconds() == pytest.approx(14 + 16)
    clock.t += 20  # past its estimate: m0 is finishing
    assert state.eta_seconds() == pytest.approx(16)


def test_the_epochs_share_of_a_job_grows_with_its_epochs():
    from orchestrator.config import load_config
    from orchestrator.planning.cost import epoch_shares

    few, many = epoch_shares(load_config("smoke")), epoch_shares(load_config("smoke", ["training.epochs=30"]))
    assert few.keys() == many.keys() and len(few) == 8
    assert all(0 < few[k] < many[k] < 1 for k in few)


def test_the_longest_trial_bounds_the_eta_from_below():
    clock = Clock()
    state = SweepState(slots=4, clock=clock, costs={"m0": 1.0})
    state.models.keys = ["m0"]
    state.trial_started("a", epochs=10)
    state.models.live["a"] = "m0"
    clock.t += 2
    state.epoch_reported("a", 1)
    assert state.eta_seconds() == pytest.approx(18)  # not 18 / 4 slots: one trial runs on one slot


def test_the_countdown_counts_down_between_estimates_and_never_below_zero():
    clock = Clock()
    state = two_running_models(clock)
    countdown = EtaCountdown()
    assert countdown.read(state) is None
    clock.t += 4
    state.epoch_reported("a", 1)
    assert countdown.read(state) == pytest.approx(66)
    calls = []
    estimate = state.eta_seconds
    state.eta_seconds = lambda now=None: calls.append(now) or estimate(now)
    for _ in range(5):
        clock.t += 1
        assert countdown.read(state) == pytest.approx(66 - (clock.t - 1004))
    assert calls == []  # nothing new: the last estimate counted down, not estimated again
    clock.t += 500
    assert countdown.read(state) == 0.0
    from orchestrator.driver.progress import status_line

    assert status_line(state, countdown=countdown).endswith("ETA finishing")  # jobs are left
    clock.t += 1
    state.epoch_reported("a", 2)  # new information: estimated again
    value = countdown.read(state)
    assert calls == [clock.t] and value == pytest.approx(estimate(clock.t))


def test_the_recorder_feeds_the_trials_clocks_from_tunes_callbacks():
    from orchestrator.driver.tune_adapters import make_recorder_class

    cfg = parse_config({
        "name": "tiny", "workload": {"dataset": "digits", "model": "mlp"},
        "load": {"name": "width", "values": [8]}, "temperature": {"name": "learning_rate", "values": [0.05]},
        "seeds": [0, 1], "training": {"epochs": 4, "batch_size": 64}})
    keys = [mkey(cfg, *k) for k in cfg.model_keys()]
    clock = Clock()
    state = SweepState(clock=clock, costs={k: 1.0 for k in keys})
    state.models.keys = keys
    recorder = make_recorder_class()(cfg, "/nonexistent", "run", state)

    class Trial:
        trial_id, config = "t0", model_job(cfg, [(8, 0.05, 0)])
        last_result = {"status": "ok", "wall_seconds": 9.0, "key": keys[0]}

    recorder.on_trial_start(0, [], Trial())
    clock.t += 3
    recorder.on_trial_result(0, [], Trial(), {"kind": "model", "key": keys[0], "epoch": 1, "models": 1,
                                              "epoch_seconds": 2.0})
    # Its first epoch 2 s + 3 epochs x 2 s = 8 s for the first model; the second waits: 8 s more.
    assert state.eta_seconds() == pytest.approx(6 + 8)
    recorder.on_trial_result(0, [], Trial(), Trial.last_result)  # the final report: not an epoch
    assert state.trials["t0"].epoch == 1
    recorder.on_trial_complete(0, [], Trial())
    assert state.trials == {} and state.eta_seconds() == pytest.approx(9.0)  # measured: 9 s per unit


class FakeTerminal(io.StringIO):
    """A terminal that keeps what is written; ``fd``: the file descriptor it says it has (for its size)."""

    def __init__(self, fd: int | None = None):
        super().__init__()
        self.fd = fd

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        if self.fd is None:
            raise io.UnsupportedOperation("fileno")
        return self.fd


def test_the_terminal_view_draws_a_bar_with_the_counts_and_the_events_above_it(monkeypatch):
    from orchestrator.driver import progress as progress_module
    from orchestrator.driver.progress import format_seconds, make_progress

    monkeypatch.setattr(progress_module, "TICK_S", 3600.0)  # the test draws; the thread waits until closed
    clock = Clock()
    state = two_running_models(clock)

    class Recorder:
        events = []

    # A terminal nobody sized (a new pseudo-terminal, as under `script`: 0 x 0): tqdm alone reads it as -1
    # rows and draws nothing.
    unsized, other_end = os.openpty()
    term = FakeTerminal(fd=unsized)
    progress = make_progress(term)(state, Recorder())  # a terminal: its isatty() says so
    progress.on_step_end(0, [])
    from ray import cloudpickle

    cloudpickle.dumps(progress)  # Tune pickles its callbacks with the Tuner (its bar, thread and lock do not)
    clock.t += 4
    state.epoch_reported("a", 1)
    progress.on_trial_result(0, [], None, {})
    state.models.live.pop("b")
    state.trial_stopped("b")
    state.models.outcome["m1"], state.models.seconds["m1"] = "ok", 40.0  # 20 s per unit, as m0's projection
    Recorder.events.append(("model", "m1", "ok", {"wall_seconds": 40.0, "test_acc": 0.5}))
    progress.on_trial_complete(0, [], None)
    for _ in range(3):  # what the redraw thread does once a second
        clock.t += 1
        progress.view.render(clock.t)
    progress.view.close()
    drawings = [part for part in term.getvalue().split("\r") if " jobs · " in part]
    assert "ETA ?" in drawings[0] and "  0%|" in drawings[0]
    assert "model m1 ok in 40s test_acc=0.500\n" in term.getvalue()
    assert "| 1/6 jobs · " in drawings[-1] and "models 1/4" in drawings[-1]
    etas = [d.rsplit("ETA ", 1)[1].strip() for d in drawings[-4:]]
    # Estimated at m1's end: m0 36 s left, pending 3 units x 20 s, over 2 slots: 48 s; then counted down.
    assert etas == ["48s", "47s", "46s", "45s"]
    progress.on_experiment_end([])
    os.close(unsized)
    os.close(other_end)
    final = term.getvalue().rsplit("\r", 1)[1]
    assert final.startswith("models 1/4 done") and final.endswith(f"ETA {format_seconds(state.eta_seconds())}\n")


def test_the_redraw_thread_counts_the_eta_down_while_tune_is_quiet(monkeypatch):
    """The thread is the only drawer here: after one Tune callback the clock moves on and the ETA on the
    terminal follows (waited for, with a generous limit: no race with the thread's timing)."""
    from orchestrator.driver import progress as progress_module

    monkeypatch.setattr(progress_module, "TICK_S", 0.01)
    clock = Clock()
    state = two_running_models(clock)
    clock.t += 4
    state.epoch_reported("a", 1)  # ETA 66 s

    class Recorder:
        events = []

    term = FakeTerminal()
    progress = progress_module.make_progress(term)(state, Recorder())
    progress.on_step_end(0, [])
    assert "ETA 1m06s" in term.getvalue()
    clock.t += 3

    def waited_for(condition) -> bool:
        for _ in range(2000):
            if condition():
                return True
            threading.Event().wait(0.01)
        return False

    assert waited_for(lambda: "ETA 1m03s" in term.getvalue())
    # Tune quiet for longer than STALE_S (its loop ended in an exception, say): the thread ends by itself.
    clock.t += progress_module.STALE_S + 1
    assert waited_for(lambda: not progress.view._thread.is_alive())
    assert "ETA 57s" not in term.getvalue()
    progress.close()  # what run_sweep does after each experiment, also one that raised
    assert progress.view._thread is None and progress.view._bar is None


def test_the_view_is_closed_after_an_experiment_that_raised():
    """Ctrl-C ends tuner.fit() without on_experiment_end: run_sweep closes the view itself (no bar left)."""
    from orchestrator.driver.sweep import _closed_after

    closed = []

    class Shown:
        def close(self):
            closed.append(True)

    with pytest.raises(KeyboardInterrupt):
        with _closed_after(Shown()):
            raise KeyboardInterrupt
    assert closed == [True]
    with _closed_after(None):  # no progress view (the Python API's default)
        pass
