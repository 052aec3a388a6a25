"""Where and how tensors run: device, threads, precision, CUDA graphs, distributed."""
