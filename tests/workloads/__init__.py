"""workloads/: models, data, the training engine and the metrics, without Ray."""
