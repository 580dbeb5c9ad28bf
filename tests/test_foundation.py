"""The foundation every module relies on: light imports, the error tree, the registry, shared validation."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from decimal import Decimal

import pytest

from backends.errors import BackendMisconfigured, BackendUnavailable, EditError, InvalidRequest, RateLimited
from backends.registry import UnknownBackendKind, backend_class, create_backend
from backends.standins import FunctionBackend
from tests.backend_contract import BackendContract


def test_importing_packages_does_not_load_torch_or_diffusers():
    code = (
        "import sys, backends, pipeline, pipeline.cli, backends.registry, backends.validation;"
        "import pipeline.routing, pipeline.ledger, pipeline.run, pipeline.eval, pipeline.serve, pipeline.cluster;"
        "import pipeline.bench, backends.openai, backends.masks, backends.diffusion, backends.standins;"
        "import pipeline.cli as c; c.build_parser();"
        "bad = [m for m in ('torch', 'diffusers', 'transformers', 'ray', 'fastapi', 'python_multipart', "
        "'matplotlib') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "exc",
    [
        InvalidRequest("n out of range", field="n", value=11, limit="1 to 10", job_id="j1", backend="api"),
        RateLimited("slow down", retry_after=2.5, job_id="j2", backend="api"),
        BackendMisconfigured("bad key", backend="api"),
        EditError("plain"),
    ],
)
def test_errors_pickle_with_their_fields(exc):
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is type(exc)
    assert str(clone) == str(exc)
    assert vars(clone) == vars(exc)


def test_error_names_job_and_backend():
    exc = RateLimited("429 from upstream", retry_after=1.0, job_id="job-42", backend="openai-high")
    assert str(exc) == "job 'job-42', backend 'openai-high': 429 from upstream"
    assert isinstance(BackendMisconfigured("x"), BackendUnavailable)


def test_registry_suggests_the_kind_meant():
    with pytest.raises(UnknownBackendKind, match="Did you mean 'openai'"):
        backend_class("opneai")
    assert backend_class("function") is FunctionBackend


@pytest.mark.parametrize("kind", ["openai", "sdxl"])
def test_bad_backend_settings_name_the_backend_and_every_bad_key(kind):
    with pytest.raises(BackendMisconfigured) as info:
        create_backend(kind, "mine", {"modle": "x", "max_n": "many"} if kind == "sdxl" else {"modle": "x"})
    message = str(info.value)
    assert f"backend 'mine': bad {kind} settings" in message and "modle: Extra inputs are not permitted" in message
    if kind == "sdxl":
        assert "max_n:" in message


class TestFunctionBackendContract(BackendContract):
    @pytest.fixture
    def backend(self):
        return FunctionBackend(name="fake", cost_per_image=Decimal("0.02"))

    @pytest.fixture
    def paid_calls(self, backend):
        return lambda: backend.calls


def test_suite_strips_every_hosted_services_secrets_from_the_environment():
    from tests.conftest import strip_secret_env

    names = [
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_API_VERSION",
        "FIREFLY_SERVICES_CLIENT_ID",
        "FIREFLY_SERVICES_CLIENT_SECRET",
        "FIREFLY_SERVICES_ORG",
    ]
    with pytest.MonkeyPatch.context() as outer:
        for name in names:
            outer.setenv(name, "a-developers-real-secret")
        with pytest.MonkeyPatch.context() as mp:
            strip_secret_env(mp)
            assert [n for n in names if n in os.environ] == []
