"""What a models row records so that a number can be traced to its inputs and to the arithmetic that made it.

    dataset_sha256(data) -> str          the content of the four tensors (dtype, shape, bytes), not their names
    execution_path(device, engine, backend, precision, compile_mode) -> str   JSON: which code path and machine

Two runs of one config agree bit for bit only on the same execution path (engine, backend, torch, BLAS, CPU
instruction set, device); across paths floating-point sums are ordered differently and SGD amplifies the
rounding, so they must agree in verdicts, not in digits (docs/science.md gives a measured example).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re

import torch

from workloads.data import Dataset


def dataset_sha256(data: Dataset) -> str:
    """sha256 over train_x, train_y, test_x, test_y: each one's dtype, shape and bytes (C order, on the CPU).
    Two datasets with the same content have the same hash whatever their name or device; one changed label
    changes it."""
    digest = hashlib.sha256()
    for tensor in (data.train_x, data.train_y, data.test_x, data.test_y):
        flat = tensor.detach().to("cpu").contiguous()
        digest.update(f"{flat.dtype}{tuple(flat.shape)};".encode())
        if flat.numel():
            digest.update(flat.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def execution_path(device: str, *, engine: str, backend: str, precision: str = "fp32",
                   compile_mode: str = "off") -> str:
    """JSON object (sorted keys) naming the path a model was trained on: engine ("single" | "cohort"), backend
    ("module" for one model; a cohort_net backend for a cohort), precision, compile mode, torch version, and the
    machine: the CPU instruction set torch dispatches to, its BLAS, the thread count; on CUDA the device name
    and the CUDA and cuDNN versions."""
    path = {"engine": engine, "backend": backend, "precision": precision, "compile": compile_mode,
            "torch": torch.__version__, **_machine(str(device))}
    return json.dumps(path, sort_keys=True)


def _machine(device: str) -> dict:
    out = {"device": device, "cpu_capability": _cpu_capability(), "blas": _blas(),
           "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        out.update(gpu=torch.cuda.get_device_name(index), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return out


def _cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # an older torch
        return "unknown"


@functools.lru_cache(maxsize=1)
def _blas() -> str:
    """The BLAS torch was built with (from its build configuration), e.g. "mkl" or "open"."""
    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return found[1] if found else "unknown"
