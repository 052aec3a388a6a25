"""Training: one Trainer (how: device, precision, graphs, checkpoints, resume, signals,
NaN policy, DDP, callbacks) and Tasks (what a step computes); optimisers, losses,
diagnostics. ``cnnlab.train.api.fit`` is the entry point."""
