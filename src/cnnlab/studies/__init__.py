"""Many runs: ablations (grids × seeds), sweeps (Optuna), and the speed bench."""
