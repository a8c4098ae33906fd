"""The spectral norm of the weights: the product over the model's weight layers of each one's largest singular
value, prod_l sigma_max(W_l) (Bartlett et al. 2017, Neyshabur et al. 2017: the Lipschitz bound of the network up
to its activations, the usual norm-based capacity measure).

Which weights: every Linear weight (out, in) and every Conv weight (out, in, *kernel) reshaped to
(out, in * prod(kernel)) (the kernel's matrix, a cheap proxy: not the operator norm of the convolution); biases,
BatchNorm and embeddings are left out. The product spans orders of magnitude across widths, so cells aggregate
it as the log of the seed mean (the Hessian's convention). Computed in float64, on the model's device.
"""

from workloads.metric_specs import MetricSpec, Panel, ReportColumn

METRIC = MetricSpec(
    "weight_spectral_norm", "model", "",
    "product over Linear and Conv weights (kernels as (out, in*k*k) matrices) of the largest singular value",
    aggregate="log_of_mean", required=False,
    panel=Panel("ln weight spectral norm (natural log of the seed mean)", "magma", fmt=".1f"),
    report=ReportColumn("log ‖W‖σ", ".2f"),
    compute="workloads.extra_metrics.weight_spectral_norm:weight_spectral_norm",
)


def weight_spectral_norm(model, data=None) -> float:
    """prod_l sigma_max(W_l) over the Linear and Conv weights of ``model`` (see the module docstring); ``data``
    is not used (the metric depends on the weights alone). 1.0 for a model without such layers."""
    import torch  # here, not at import: the spec above is read where torch is not loaded
    from torch import nn

    log_total = 0.0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                w = module.weight.detach().to(torch.float64)
                sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
                log_total += float(torch.log(sigma))
    return float(torch.exp(torch.tensor(log_total, dtype=torch.float64)))
