"""Analysis of trained models: explanations, robustness, out-of-distribution scores."""
