"""CLI sub-commands, one module each (discovered by cnnlab.cli)."""
