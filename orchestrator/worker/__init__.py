"""What runs inside a Tune worker: the sweep's trainable (trainable.py), a job's device, checkpoints and weights
(job_io.py), a model's training history (history.py), the rows a job writes besides its results (records.py), and
what each trial shows to Tune's own tools (trial_outputs.py)."""
