"""Training: reproducibility, schedule, divergence, exact resume, evaluation."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workloads.data import Dataset, subsample_train
from workloads.train import (
    TrainConfig,
    TrainingOOMError,
    evaluate,
    learning_rate,
    seeded_model,
    set_seed,
    train,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small(mnist1d):
    """1003 class-balanced MNIST-1D points (round(0.25 * count) per class): enough to learn something, quick to pass over."""
    return subsample_train(mnist1d, 0.25, seed=0)


def mlp(data, seed=0, width=16):
    return seeded_model("mlp", seed, width=width, num_classes=data.num_classes, input_shape=data.input_shape)


def params(model):
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


# ------------------------------------------------------------------------------------------------------
# Config and schedule

def test_config_defaults_are_the_authors_setting():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.lr, c.momentum, c.weight_decay) == (100, 128, 0.1, 0.9, 5e-4)
    assert (c.schedule, c.lr_scaling, c.checkpoint_every) == ("constant", "none", 0)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match="batch_size must be >= 1.*lr must be > 0"):
        TrainConfig(lr=0, batch_size=0)


def test_learning_rate_schedules():
    step = TrainConfig(epochs=8, lr=0.2, schedule="step")
    assert [learning_rate(step, e) for e in range(8)] == pytest.approx([0.2] * 6 + [0.02] * 2)
    assert learning_rate(TrainConfig(epochs=8, lr=0.2), 7) == 0.2
    linear = TrainConfig(lr=0.1, batch_size=512, base_batch_size=128, lr_scaling="linear")
    assert learning_rate(linear, 0) == pytest.approx(0.4)
    assert learning_rate(TrainConfig(lr=0.1, batch_size=512), 0) == 0.1  # no scaling by default


def test_history_records_the_step_schedule(small):
    cfg = TrainConfig(epochs=4, batch_size=100, lr=0.05, schedule="step")
    result = train(mlp(small), small, cfg)
    assert result.status == "ok" and result.error is None and result.epochs_completed == 4
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    assert [h["lr"] for h in result.history] == pytest.approx([0.05, 0.05, 0.05, 0.005])
    assert all(set(h) >= {"train_loss", "train_acc", "seconds"} for h in result.history)


def test_eval_epochs_auto_gives_a_handful_and_the_last_epoch():
    from workloads.settings import eval_epochs

    assert eval_epochs(60, "auto") == frozenset({11, 23, 35, 47, 59})
    assert eval_epochs(7, "auto") == frozenset(range(7))  # fewer than 2 x 5 epochs: every epoch (7 // 5 = 1)
    assert eval_epochs(12, "auto") == frozenset({1, 3, 5, 7, 9, 11})
    assert eval_epochs(10, 4) == frozenset({3, 7, 9})  # every 4th, and the last
    assert eval_epochs(3, 100) == frozenset({2})
    with pytest.raises(ValueError, match="eval_every must be auto .* got 0"):
        TrainConfig(eval_every=0)
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every="often")


def test_history_test_points_match_an_independent_evaluation(small):
    """The test loss and accuracy in the history are those of the model at the end of that epoch: train the
    same model again for exactly that many epochs and evaluate it separately."""
    cfg = TrainConfig(epochs=4, batch_size=100, lr=0.05, eval_every=2)
    history = train(mlp(small), small, cfg).history
    assert [h["epoch"] for h in history if h["test_loss"] is not None] == [1, 3]
    assert all(h["test_acc"] is None for h in history if h["epoch"] in (0, 2))
    two = train(mlp(small), small, TrainConfig(epochs=2, batch_size=100, lr=0.05, eval_every=100)).model
    # epochs=2 changes nothing of the first two epochs (constant schedule): the same weights as history[1]
    loss, acc = evaluate(two, small.test_x, small.test_y)
    assert history[1]["test_loss"] == pytest.approx(loss, rel=1e-12) and history[1]["test_acc"] == acc


def test_evaluating_during_training_leaves_the_weights_identical(small):
    """eval_every is left out of the config hash because evaluating does not change training: the weights and
    BatchNorm statistics after training with an evaluation every epoch equal those with one at the end."""
    every = train(cnn_bn(small), small, TrainConfig(epochs=3, batch_size=100, lr=0.05, eval_every=1))
    once = train(cnn_bn(small), small, TrainConfig(epochs=3, batch_size=100, lr=0.05, eval_every=1000))
    assert sum(h["test_loss"] is not None for h in every.history) == 3
    assert sum(h["test_loss"] is not None for h in once.history) == 1
    for (name, a), (_, b) in zip(every.model.state_dict().items(), once.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["train_loss"] for h in every.history] == [h["train_loss"] for h in once.history]


def test_epoch_fn_sees_every_epoch_as_it_ends(small):
    seen = []
    result = train(mlp(small), small, TrainConfig(epochs=3, batch_size=100, lr=0.05), epoch_fn=seen.append)
    assert seen == result.history and seen[0] is not result.history[0]  # copies: a caller cannot alter it


# ------------------------------------------------------------------------------------------------------
# Reproducibility

def test_same_seed_same_parameters_different_seed_differs(small):
    cfg = TrainConfig(epochs=2, batch_size=50, lr=0.05)
    a = train(mlp(small), small, cfg).model
    b = train(mlp(small), small, cfg).model
    c = train(mlp(small), small, TrainConfig(epochs=2, batch_size=50, lr=0.05, seed=1)).model
    assert torch.equal(params(a), params(b))
    assert not torch.equal(params(a), params(c))  # same initialisation, different batch order


def test_set_seed_seeds_every_global_generator():
    set_seed(11)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_seed(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_real_training_learns_mnist1d(mnist1d):
    model = mlp(mnist1d, width=64)
    result = train(model, mnist1d, TrainConfig(epochs=20, batch_size=128, lr=0.05))
    train_loss, train_acc = evaluate(model, mnist1d.train_x, mnist1d.train_y)
    test_loss, test_acc = evaluate(model, mnist1d.test_x, mnist1d.test_y)
    assert result.status == "ok"
    assert train_acc > 0.5 and test_acc > 0.4  # chance is 0.1
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] - 0.5
    assert train_loss < np.log(10) - 0.5


def test_step_count_drops_last_partial_batch(small, monkeypatch):
    """Count training steps: n=1003, B=300 -> 3 full batches per epoch, never a 4th of 103."""
    from workloads import cohort_fused

    assert small.train_size == 1003
    sizes = []
    step = cohort_fused.fused_step

    def counting(flat, grad, momentum, x, *args):
        sizes.append(x.shape[1])  # the mlp's member-major layout: (M, B, features)
        return step(flat, grad, momentum, x, *args)

    monkeypatch.setattr(cohort_fused, "fused_step", counting)
    result = train(mlp(small), small, TrainConfig(epochs=2, batch_size=300, lr=0.01))
    assert result.backend == "fused" and sizes == [300] * 6


# ------------------------------------------------------------------------------------------------------
# Failure modes

def test_huge_learning_rate_diverges_without_raising(small):
    result = train(mlp(small), small, TrainConfig(epochs=3, batch_size=100, lr=1e6))
    assert result.status == "diverged"
    assert "epoch 0" in result.error and "step" in result.error
    assert result.epochs_completed == len(result.history) == 0
    assert isinstance(result.model, nn.Module)


def test_divergence_reports_the_exact_step(small):
    """Poison one training example; the first batch containing it is computed independently."""
    poisoned = 123
    x = small.train_x.clone()
    x[poisoned] = float("inf")
    bad = Dataset("poisoned", x, small.train_y, small.test_x, small.test_y, small.num_classes)
    cfg = TrainConfig(epochs=3, batch_size=10, lr=0.01, seed=4)
    n = small.train_size
    epoch0_order = torch.randperm(n, generator=torch.Generator().manual_seed(4))
    step = int((epoch0_order == poisoned).nonzero()) // 10
    assert step < n // 10  # the row is not in the dropped tail
    result = train(mlp(small), bad, cfg)
    assert result.status == "diverged"
    assert f"at epoch 0 (0-based), step {step} of {n // 10}" in result.error
    assert result.history == []


def test_divergence_in_a_later_epoch_keeps_earlier_history(small):
    """A model that returns NaN from its 25th training batch on: epochs of 10 steps -> epoch 2, step 4."""

    class Breaks(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            out = self.inner(x)
            return out * float("nan") if self.calls > 24 else out

    cfg = TrainConfig(epochs=5, batch_size=100, lr=0.01, eval_every=5)  # no test pass before the last epoch's
    result = train(Breaks(mlp(small)), small, cfg)
    assert result.status == "diverged" and result.epochs_completed == 2
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert "epoch 2 (0-based), step 4 of 10" in result.error


def test_batch_larger_than_training_set_is_an_error(small):
    with pytest.raises(ValueError, match=r"batch_size=1024 exceeds the training-set size n=1003 .*never shrunk"):
        train(mlp(small), small, TrainConfig(epochs=1, batch_size=1024))


def test_out_of_memory_is_reported_not_worked_around(small):
    class Oom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(40, 10)

        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(TrainingOOMError, match="batch_size=100.*never shrunk"):
        train(Oom(), small, TrainConfig(epochs=1, batch_size=100))


# ------------------------------------------------------------------------------------------------------
# Checkpoint and resume

def cnn_bn(data, seed=0):
    """Has BatchNorm buffers and momentum state: both must survive a checkpoint."""
    return seeded_model("cnn", seed, width=2, num_classes=data.num_classes, input_shape=data.input_shape,
                        batch_norm=True, depth=2)


def test_resume_is_bit_exact(small):
    cfg = TrainConfig(epochs=4, batch_size=100, lr=0.05, schedule="step", checkpoint_every=2)
    states = []
    straight = train(cnn_bn(small), small, cfg, checkpoint_fn=states.append)
    assert [s["epoch"] for s in states] == [2, 4]
    first = states[0]
    # One checkpoint format: workloads/cohort_checkpoint.py's, for a cohort of one (a member axis of 1).
    assert len(first["histories"][0]) == 2 and first["state"]["1.weight"].device.type == "cpu"
    assert first["state"]["1.weight"].shape[0] == 1

    resumed = train(cnn_bn(small, seed=99), small, cfg, resume_state=first)  # its own init is overwritten
    assert resumed.status == "ok" and resumed.epochs_completed == 4
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name  # parameters and BatchNorm running statistics
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in straight.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]


def test_a_checkpoint_loads_without_executing_code_and_resumes_bit_exactly(small):
    """Checkpoints are read from run directories that others can write: they must load with
    torch.load(weights_only=True), which never calls code named by the file, and still resume exactly,
    global RNG states (torch, numpy, python) included."""
    import io

    cfg = TrainConfig(epochs=3, batch_size=100, lr=0.05, checkpoint_every=1)
    states, after = [], []

    def keep(state):  # what the global RNGs are right after each checkpoint
        states.append(state)
        after.append((torch.rand(3), np.random.rand(3), random.random()))

    straight = train(cnn_bn(small), small, cfg, checkpoint_fn=keep)
    buffer = io.BytesIO()
    torch.save(states[1], buffer)  # after epoch 2: its RNG states differ from the seeded ones (draws above)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)

    restored = []
    resumed = train(cnn_bn(small, seed=7), small, cfg, resume_state=loaded,
                    checkpoint_fn=lambda s: restored.append((torch.rand(3), np.random.rand(3), random.random())))
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    (t1, n1, p1), (t2, n2, p2) = after[1], restored[0]  # drawn from the same restored states
    assert torch.equal(t1, t2) and np.array_equal(n1, n2) and p1 == p2


def dropout_mlp(data, seed=0):
    """Draws from the global torch generator in every training step: the engine runs it with backend plain."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, data.num_classes))


def test_a_dropout_model_is_reproducible_and_resumes_bit_exactly(small):
    """Its masks come from the global generators: train() seeds them, and the checkpoint carries their states
    (without them the resumed run would draw epoch 0's masks again)."""
    cfg = TrainConfig(epochs=3, batch_size=100, lr=0.05, checkpoint_every=1)
    states = []
    straight = train(dropout_mlp(small), small, cfg, checkpoint_fn=states.append)
    assert straight.backend == "plain" and straight.status == "ok"
    again = train(dropout_mlp(small), small, cfg)
    assert torch.equal(params(straight.model), params(again.model))
    other_seed = train(dropout_mlp(small), small, TrainConfig(epochs=3, batch_size=100, lr=0.05, seed=1))
    assert not torch.equal(params(straight.model), params(other_seed.model))
    resumed = train(dropout_mlp(small, seed=5), small, cfg, resume_state=states[0])
    assert torch.equal(params(straight.model), params(resumed.model))
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in straight.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]


def test_a_foreign_resume_state_is_a_resume_state_error(small):
    from workloads.train import ResumeStateError

    cfg = TrainConfig(epochs=2, batch_size=100, lr=0.05, checkpoint_every=1)
    states = []
    train(mlp(small), small, cfg, checkpoint_fn=states.append)
    for bad in ({"epoch": 1}, [1, 2], {**states[0], "state": {"nope": torch.zeros(1)}}, {**states[0], "epoch": 99}):
        with pytest.raises(ResumeStateError):
            train(mlp(small), small, cfg, resume_state=bad)


def test_checkpoint_is_a_snapshot(small):
    cfg = TrainConfig(epochs=2, batch_size=100, lr=0.05, checkpoint_every=1)
    states = []
    result = train(mlp(small), small, cfg, checkpoint_fn=states.append)
    w0 = states[0]["state"]["1.weight"][0]
    assert not torch.equal(w0, result.model.state_dict()["1.weight"])  # not aliased to live weights


def test_resume_with_different_config_is_rejected(small):
    cfg = TrainConfig(epochs=2, batch_size=100, lr=0.05, checkpoint_every=1)
    states = []
    train(mlp(small), small, cfg, checkpoint_fn=states.append)
    with pytest.raises(ValueError, match="lr: checkpoint 0.05 vs now 0.1"):
        train(mlp(small), small, TrainConfig(epochs=2, batch_size=100, lr=0.1), resume_state=states[0])


# ------------------------------------------------------------------------------------------------------
# evaluate

def test_evaluate_matches_full_batch_reference_and_restores_mode(small):
    model = cnn_bn(small)
    train(model, small, TrainConfig(epochs=1, batch_size=100, lr=0.05))
    model.train()
    loss, acc = evaluate(model, small.train_x, small.train_y, batch_size=333)  # 333 does not divide 1003
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        logits = model(small.train_x)  # eval mode: BatchNorm running statistics
    assert loss == pytest.approx(F.cross_entropy(logits, small.train_y).item(), rel=1e-5)
    assert acc == (logits.argmax(1) == small.train_y).double().mean().item()
    evaluate(model, small.test_x, small.test_y)
    assert not model.training


def test_evaluate_rejects_empty_input(small):
    with pytest.raises(ValueError):
        evaluate(mlp(small), small.train_x[:0], small.train_y[:0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_matches_cpu_batch_order(small):
    cfg = TrainConfig(epochs=2, batch_size=100, lr=0.05, device="cuda")
    result = train(mlp(small), small, cfg)
    assert result.status == "ok" and next(result.model.parameters()).device.type == "cuda"
    cpu = train(mlp(small), small, TrainConfig(epochs=2, batch_size=100, lr=0.05)).model
    assert torch.allclose(params(result.model).cpu(), params(cpu), atol=1e-4)


def test_checkpoint_due_every_nth_epoch_or_once_the_minutes_have_passed():
    from workloads.train import checkpoint_due

    assert [checkpoint_due(e, 3, 0, 1e9) for e in range(1, 7)] == [False, False, True, False, False, True]
    assert checkpoint_due(1, 0, 5, 299.9) is False and checkpoint_due(1, 0, 5, 300.0) is True
    assert checkpoint_due(2, 3, 5, 301.0) is True  # either trigger
    assert checkpoint_due(3, 0, 0, 1e9) is False  # both off


def test_a_time_triggered_checkpoint_is_the_same_checkpoint(small):
    """checkpoint_every 0 with checkpoint_minutes tiny (every epoch qualifies): the same states as
    checkpoint_every 1; with both 0 there are none."""
    by_time, by_epoch, none = [], [], []
    train(mlp(small), small, TrainConfig(epochs=2, batch_size=100, lr=0.05, checkpoint_minutes=1e-9),
          checkpoint_fn=by_time.append)
    train(mlp(small), small, TrainConfig(epochs=2, batch_size=100, lr=0.05, checkpoint_every=1, checkpoint_minutes=0),
          checkpoint_fn=by_epoch.append)
    train(mlp(small), small, TrainConfig(epochs=2, batch_size=100, lr=0.05, checkpoint_minutes=0),
          checkpoint_fn=none.append)
    assert [s["epoch"] for s in by_time] == [s["epoch"] for s in by_epoch] == [1, 2] and none == []
    for a, b in zip(by_time, by_epoch):
        assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
