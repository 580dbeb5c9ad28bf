"""Gemini and Firefly backends pointed at their loopback stand-ins, for `editroute demo` (no key, no network).

`hosted_standin_settings(kind, spec)`: a policy entry's settings with its connection aimed at a placeholder URL
(the stand-ins listen on random ports, dead once the demo ends, so a saved policy holds placeholders) and its
credentials read from variables only this process sets. `HostedStandins(kinds)`: the stand-ins for those kinds,
started with those credentials; `urls` maps each placeholder to the running server's URL. Both stand-ins say they
are stand-ins (a banner at start; `labels` for reports); their images are not edits.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

HOSTED_STANDIN_KINDS = ("gemini", "firefly")
_PLACEHOLDER_ROOT = "http://127.0.0.1:0/filled-in-by-editroute-demo-at-run-time"
GEMINI_URL_PLACEHOLDER = f"{_PLACEHOLDER_ROOT}/gemini"
FIREFLY_URL_PLACEHOLDER = f"{_PLACEHOLDER_ROOT}/firefly"
FIREFLY_TOKEN_URL_PLACEHOLDER = f"{_PLACEHOLDER_ROOT}/firefly-ims"
# Credentials the stand-ins check; they live only in the demo process's environment, never in a saved policy.
GEMINI_KEY_ENV, GEMINI_KEY = "EDITROUTE_DEMO_GEMINI_KEY", "AIza-standin-demo-not-a-real-key"
FIREFLY_ID_ENV, FIREFLY_ID = "EDITROUTE_DEMO_FIREFLY_CLIENT_ID", "standin-demo-client"
FIREFLY_SECRET_ENV, FIREFLY_SECRET = "EDITROUTE_DEMO_FIREFLY_CLIENT_SECRET", "standin-demo-secret-not-real"
LABELS = {
    "gemini": "loopback fake of Google's Gemini API (not the real service; images are not edits)",
    "firefly": "loopback fake of Adobe Firefly Services and IMS (not the real services; images are not edits)",
}


def hosted_standin_settings(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` (a policy's backend entry, settings inline) aimed at the `kind`'s stand-in placeholders."""
    secret_files = ("api_key_file", "client_id_file", "client_secret_file")  # the stand-in's own credentials instead
    out = {k: v for k, v in spec.items() if k not in secret_files}
    if kind == "gemini":
        out.update(base_url=GEMINI_URL_PLACEHOLDER, api_key_env=GEMINI_KEY_ENV, max_retries=1)
    elif kind == "firefly":
        out.update(
            base_url=FIREFLY_URL_PLACEHOLDER,
            token_url=FIREFLY_TOKEN_URL_PLACEHOLDER,
            client_id_env=FIREFLY_ID_ENV,
            client_secret_env=FIREFLY_SECRET_ENV,
            max_retries=1,
            poll_interval_s=0.05,
            max_poll_interval_s=0.2,
            requests_per_minute=None,  # the stand-in has no per-organisation limit; Adobe's 4/min would take minutes
        )
    else:
        raise ValueError(f"no hosted stand-in for kind {kind!r} (have: {', '.join(HOSTED_STANDIN_KINDS)})")
    return out


class HostedStandins:
    """The Gemini and/or Firefly stand-ins a policy needs, running while the `with` block lasts."""

    def __init__(self, kinds: Iterable[str]) -> None:
        self.kinds = [k for k in HOSTED_STANDIN_KINDS if k in set(kinds)]
        self.urls: dict[str, str] = {}  # placeholder -> the running stand-in's URL
        self._stack = ExitStack()

    @property
    def labels(self) -> dict[str, str]:
        return {k: LABELS[k] for k in self.kinds}

    def __enter__(self) -> HostedStandins:
        if "gemini" in self.kinds:
            from backends.standins.gemini_server import FakeGeminiServer

            os.environ[GEMINI_KEY_ENV] = GEMINI_KEY
            gemini = self._stack.enter_context(FakeGeminiServer(api_key=GEMINI_KEY))
            self.urls[GEMINI_URL_PLACEHOLDER] = gemini.base_url
        if "firefly" in self.kinds:
            from backends.standins.firefly_server import FakeFireflyServer

            os.environ[FIREFLY_ID_ENV], os.environ[FIREFLY_SECRET_ENV] = FIREFLY_ID, FIREFLY_SECRET
            firefly = self._stack.enter_context(FakeFireflyServer(client_id=FIREFLY_ID, client_secret=FIREFLY_SECRET))
            self.urls[FIREFLY_URL_PLACEHOLDER] = firefly.base_url
            self.urls[FIREFLY_TOKEN_URL_PLACEHOLDER] = firefly.token_url
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
