"""workloads/fingerprint.py: a dataset's content hash and the execution path a models row records."""

from __future__ import annotations

import dataclasses
import json

import torch

from workloads.data import Dataset
from workloads.fingerprint import dataset_sha256, execution_path


def _data(name="a", **changes) -> Dataset:
    g = torch.Generator().manual_seed(0)
    fields = dict(name=name, train_x=torch.randn(20, 3, generator=g), train_y=torch.arange(20) % 4,
                  test_x=torch.randn(6, 3, generator=g), test_y=torch.arange(6) % 4, num_classes=4)
    return Dataset(**{**fields, **changes})


def test_the_hash_is_of_the_content_not_the_name_or_the_copy():
    a = _data()
    assert dataset_sha256(a) == dataset_sha256(_data(name="b", info={"anything": 1}))
    copy = dataclasses.replace(a, train_x=a.train_x.clone(), test_x=a.test_x.t().contiguous().t())
    assert dataset_sha256(copy) == dataset_sha256(a)


def test_one_changed_label_or_value_or_shape_changes_the_hash():
    a = _data()
    flipped = a.train_y.clone()
    flipped[7] = (flipped[7] + 1) % 4
    nudged = a.test_x.clone()
    nudged[0, 0] = torch.nextafter(nudged[0, 0], torch.tensor(1e9))
    others = [dataclasses.replace(a, train_y=flipped), dataclasses.replace(a, test_x=nudged),
              dataclasses.replace(a, train_x=a.train_x.view(torch.int32).long(),
                                  test_x=a.test_x.view(torch.int32).long()),
              dataclasses.replace(a, train_x=a.train_x.reshape(20, 3, 1), test_x=a.test_x.reshape(6, 3, 1))]
    hashes = {dataset_sha256(d) for d in [a, *others]}
    assert len(hashes) == 5


def test_the_execution_path_names_engine_backend_and_machine():
    single = json.loads(execution_path("cpu", engine="single", backend="module"))
    cohort = json.loads(execution_path("cpu", engine="cohort", backend="grouped", precision="bf16"))
    assert single["engine"] == "single" and cohort["engine"] == "cohort" and cohort["backend"] == "grouped"
    assert cohort["precision"] == "bf16" and single["torch"] == torch.__version__
    assert single["device"] == "cpu" and single["threads"] == torch.get_num_threads()
    assert single["cpu_capability"] not in ("", None) and single["blas"] not in ("", None)
    assert {k: v for k, v in single.items() if k not in ("engine", "backend", "precision")} == \
        {k: v for k, v in cohort.items() if k not in ("engine", "backend", "precision")}
