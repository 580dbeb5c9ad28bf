"""Errors of the deciding side (backends have their own tree in `backends.errors`)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A policy, manifest, config file or command-line value is wrong. The message names the file, the key
    path (or line), the value and what was expected; the CLI prints it without a traceback (exit 2)."""
