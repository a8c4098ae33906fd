"""A job's place: its device and node, its training checkpoints, and the weights of the models it builds on.

What a model or pair job (orchestrator/worker/trainable.py) needs of the worker process it runs in and of the run
directory, for every member of its cohort.
"""

from __future__ import annotations

from analysis.tables import RunTables
from orchestrator.rundir import fault_hook, storage
from orchestrator.config import SweepConfig


def job_device(cpus: float) -> str:
    """cuda when Ray gave this job a GPU (Ray sets CUDA_VISIBLE_DEVICES to it), else cpu; threads = CPUs.

    A GPU that Ray accounts for but CUDA cannot use (a declared ``--num-gpus`` on a machine without one,
    a broken driver) runs the job on the CPU and says so in the ``device`` column ("cpu (...)"), so a
    sweep that was meant for GPUs never runs on CPUs unnoticed (`landscape run` warns about such rows).
    """
    import ray
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids and torch.cuda.is_available():
        return "cuda"
    if gpu_ids:
        return f"cpu (Ray GPU {','.join(map(str, gpu_ids))} has no CUDA)"
    return "cpu"


def torch_device(device: str) -> str:
    """The torch device of a job_device label ("cpu (...)" -> "cpu")."""
    return device.split(" ", 1)[0]


def node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


def checkpoint_writer(cfg: SweepConfig, ckpt: str, keys: list[str]):
    """The checkpoint_fn of a training job (one model or a cohort; the training decides when to call it:
    workloads.train.checkpoint_due), or None when training.checkpoint_every and checkpoint_minutes are both 0.

    Checkpoints go to the run directory (shared storage on a cluster), so a retried or resumed job continues
    on any node from its last checkpoint instead of epoch 0; the job loads one whatever wrote it."""
    if not (cfg.training.checkpoint_every or cfg.training.checkpoint_minutes):
        return None

    def checkpoint_fn(state):
        with storage.writing(ckpt):
            storage.save_state(ckpt, state)
        for key in keys:
            fault_hook.point(key, state["epoch"])

    return checkpoint_fn


def load_weights(run_dir: str, tables: RunTables, key: str) -> dict:
    """A model's weights, checked against the content hash of its models row (rows written before hashes
    have none: not checked). A file that is unreadable or not the bytes its row names is deleted before the
    error propagates, so that the next plan (this run's next round, or a resume) retrains that model instead
    of measuring damaged weights (a pair of damaged weights once came out `diverged` with L2 6.7e24)."""
    uri = storage.model_uri(run_dir, key)
    row = storage.read_part_row(tables, "models", key) or {}
    try:
        return storage.load_state(uri, sha256=row.get("weights_sha256"))
    except storage.UnreadableFile:
        storage.delete(uri)
        raise
