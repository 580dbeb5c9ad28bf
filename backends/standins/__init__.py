"""Loopback stand-ins for hosted services, for tests, demos and benchmarks. They are NOT the real services:
every response carries `x-editroute-standin`, and each logs a banner saying so when it starts."""

from backends.standins.openai_server import FakeOpenAIServer

__all__ = ["FakeOpenAIServer"]
