"""Sizes and shapes of the built-in datasets (workloads/datasets.py), known without loading them: validation
checks batch sizes and builds the model on the meta device from them, and the cost model and the GPU-hour
estimate count examples (generating MNIST-1D alone costs ~5 s; CIFAR needs its files).

A dataset not listed here (a plug-in, or one registered later) is loaded once to learn them
(workloads.data.dataset_facts). Plain Python (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    """train_size, test_size: examples; input_shape: one example's shape; num_classes; needs_root: read from
    local files (workload.data_root); tokens: integer token inputs (else float inputs)."""

    train_size: int
    test_size: int
    input_shape: tuple
    num_classes: int
    needs_root: bool = False
    tokens: bool = False


DATASET_FACTS: dict[str, DatasetFacts] = {
    "mnist1d": DatasetFacts(4000, 1000, (40,), 10),
    "digits": DatasetFacts(1437, 360, (64,), 10),
    "cifar10": DatasetFacts(50000, 10000, (3, 32, 32), 10, needs_root=True),
    "cifar100": DatasetFacts(50000, 10000, (3, 32, 32), 100, needs_root=True),
    "svhn": DatasetFacts(73257, 26032, (3, 32, 32), 10, needs_root=True),
    "synthetic-cifar": DatasetFacts(50000, 10000, (3, 32, 32), 10),  # NOT real data: CIFAR-shaped noise, benchmarks
}
