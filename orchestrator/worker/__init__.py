"""What runs inside a Tune worker: the sweep's trainable (trainable.py), a job's device, checkpoints and weights
(job_io.py), and a model's training history (history.py)."""
