"""Suite-wide guards: nothing leaves loopback, no real API key is ever visible to a test, hubs are offline."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

pytest_plugins = [  # tiny random-weight stand-ins, built once per session
    "tests.fixtures_sdxl",
    "tests.fixtures_masking",
    "tests.fixtures_tiny_diffusion",
]

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["EDITROUTE_ALLOW_STANDINS"] = "1"  # `kind: function` in test policies (refused in real ones)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_create_connection = socket.create_connection


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a hostname other than localhost would need DNS: refuse


def _guard(address):
    if not _is_local(address):
        raise RuntimeError(f"test tried to reach {address!r}: tests may only use loopback")


def _connect(self, address):
    _guard(address)
    return _real_connect(self, address)


def _connect_ex(self, address):
    _guard(address)
    return _real_connect_ex(self, address)


def _create_connection(address, *args, **kwargs):
    _guard(address)
    return _real_create_connection(address, *args, **kwargs)


socket.socket.connect = _connect  # type: ignore[method-assign]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
socket.create_connection = _create_connection  # type: ignore[assignment]


_SECRET_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_BASE_URL",
    "EDITROUTE_API_KEYS",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
)
_SECRET_ENV_PREFIXES = ("FIREFLY_SERVICES_", "GOOGLE_GENAI_")  # client id/secret; google-genai's own settings


def strip_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real key (OpenAI, Gemini, Firefly) or base URL must never reach a test (or a loopback log)."""
    for name in _SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith(_SECRET_ENV_PREFIXES)]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch):
    strip_secret_env(monkeypatch)
