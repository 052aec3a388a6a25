"""The run-directory contract: names, ``metrics.jsonl``, atomic writes, checkpoints, and
loading a run (model, dataset, loader) for analysis."""
