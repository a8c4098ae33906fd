"""From a sweep config to the workloads' specs of one grid cell (what the jobs hand to workloads/experiment.py)."""

from __future__ import annotations

from orchestrator.config import SweepConfig, expand_data_root


def cell_spec(cfg: SweepConfig, load_value: float, temperature_value: float):
    """The workloads.experiment.CellSpec of one grid cell."""
    from workloads.experiment import CellSpec, HessianSettings
    from workloads.metrics.connectivity import CurveConfig
    from workloads.train import TrainConfig

    t, m, c, w = cfg.training, cfg.metrics, cfg.metrics.curve, cfg.workload
    return CellSpec(
        load_name=cfg.load.name,
        load_value=float(load_value),
        temperature_name=cfg.temperature.name,
        temperature_value=float(temperature_value),
        dataset=w.dataset,
        data_root=expand_data_root(w.data_root),  # "~/data" is the home of the node that runs the job
        model=w.model,
        model_args=dict(w.model_args),
        width=w.width,
        data_seed=w.data_seed,
        train_fraction=w.train_fraction,
        label_noise=w.label_noise,
        training=TrainConfig(
            epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
            schedule=t.schedule, lr_scaling=t.lr_scaling, base_batch_size=t.base_batch_size,
            checkpoint_every=t.checkpoint_every,
        ),
        hessian=HessianSettings(
            samples=m.hessian_samples, backend=m.hessian_backend, eigen_tol=m.hessian_eigen_tol,
            eigen_max_iter=m.hessian_eigen_max_iter, trace_tol=m.hessian_trace_tol,
            trace_max_probes=m.hessian_trace_max_probes, batch_size=m.hessian_batch_size, seed=m.hessian_seed,
        ),
        curve=CurveConfig(
            epochs=c.epochs, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, batch_size=c.batch_size,
            num_points=c.points, seed=c.seed, lr_schedule=c.lr_schedule,
        ),
        cka_probes=m.cka_probes,
        cka_probe_seed=m.cka_probe_seed,
    )
