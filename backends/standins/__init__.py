"""Loopback stand-ins for hosted services, for tests, demos and benchmarks. They are NOT the real services:
every response carries `x-editroute-standin`, and each logs a banner saying so when it starts."""

from __future__ import annotations

from typing import Any

__all__ = ["FakeOpenAIServer"]


def __getattr__(name: str) -> Any:  # lazy, so `python -m backends.standins.openai_server` imports it once
    if name == "FakeOpenAIServer":
        from backends.standins.openai_server import FakeOpenAIServer

        return FakeOpenAIServer
    raise AttributeError(name)
