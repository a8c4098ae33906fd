"""Ray clusters: joining a foreign one, several nodes, GPUs, the cluster config and submit script."""
