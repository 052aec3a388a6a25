"""The run-directory contract: atomic writes, checkpoints, ``metrics.jsonl`` and the runs
list, and opening a trained run (model, dataset, loader) again."""
