"""Deployment: export with parity checks, serving."""
