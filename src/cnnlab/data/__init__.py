"""Image datasets: by name, from files or folders, and the loaders that feed them."""
