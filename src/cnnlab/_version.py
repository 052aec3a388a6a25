"""The package version (the ground floor: every other module may read it)."""

__version__ = "0.1.0"
