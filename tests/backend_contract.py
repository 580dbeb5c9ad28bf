"""The contract every backend passes (like fsspec's abstract suite, diffusers' PipelineTesterMixin).

Use it by subclassing in a backend's test module and providing two fixtures:
  backend     the EditBackend under test, able to edit 64x64 inputs
  paid_calls  a callable returning how many paid operations (HTTP requests reaching the provider,
              pipeline calls on the GPU) have happened so far
"""

from __future__ import annotations

import io
import pickle
from decimal import Decimal

import pytest
from PIL import Image

from backends.base import CostEstimate, EditBackend, EditRequest, EditResult
from backends.errors import EditError, InvalidRequest
from backends.images import InputImage
from tests.imagery import image_bytes, mask_bytes


def make_request(*, n: int = 1, mask: bool = True, images: int = 1, size: str = "auto", **kw) -> EditRequest:
    imgs = tuple(InputImage.from_bytes(image_bytes(64, 64), f"in{i}.png") for i in range(images))
    m = InputImage.from_bytes(mask_bytes(64, 64), "mask.png", field="mask") if mask else None
    kw.setdefault("prompt", "paint the masked corner red")
    kw.setdefault("job_id", "contract-job")
    return EditRequest(images=imgs, mask=m, n=n, size=size, **kw)


class BackendContract:
    def test_satisfies_protocol(self, backend):
        assert isinstance(backend, EditBackend)
        assert isinstance(backend.name, str) and backend.name

    def test_estimate_is_free_and_positive(self, backend, paid_calls):
        before = paid_calls()
        est = backend.estimate(make_request(n=2))
        assert isinstance(est, CostEstimate)
        assert isinstance(est.usd, Decimal) and est.usd > 0
        assert est.basis
        assert paid_calls() == before

    @pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
    def test_n_images_in_requested_format(self, backend, fmt):
        comp = None if fmt == "png" else 80
        result = backend.edit(make_request(n=2, output_format=fmt, output_compression=comp))
        assert isinstance(result, EditResult)
        assert len(result.images) == 2
        for data in result.images:
            img = Image.open(io.BytesIO(data))
            assert img.format == fmt.upper()
            assert img.size == (result.width, result.height)
        assert result.output_format == fmt
        assert result.backend == backend.name
        assert result.model
        assert isinstance(result.cost_usd, Decimal) and result.cost_usd > 0

    @pytest.mark.parametrize(
        "bad",
        [
            {"n": 11},
            {"prompt": "   "},
            {"output_format": "tiff"},
            {"output_compression": 50, "output_format": "png"},
            {"background": "transparent", "output_format": "jpeg"},
            {"size": "999x999"},
        ],
        ids=["n", "prompt", "format", "compression", "background", "size"],
    )
    def test_bad_input_refused_before_spend(self, backend, paid_calls, bad):
        before = paid_calls()
        with pytest.raises(InvalidRequest) as info:
            backend.edit(make_request(**bad))
        assert "contract-job" in str(info.value)
        assert info.value.field in bad or info.value.field in ("output_compression", "background")
        assert paid_calls() == before

    def test_mask_of_wrong_size_refused_before_spend(self, backend, paid_calls):
        before = paid_calls()
        req = make_request()
        bad_mask = InputImage.from_bytes(mask_bytes(32, 32), "small.png", field="mask")
        with pytest.raises(InvalidRequest) as info:
            backend.edit(EditRequest(**{**req.__dict__, "mask": bad_mask}))
        assert info.value.field == "mask"
        assert "32x32" in str(info.value) and "64x64" in str(info.value)
        assert paid_calls() == before

    def test_errors_pickle(self, backend):
        try:
            backend.edit(make_request(n=0))
        except EditError as exc:
            clone = pickle.loads(pickle.dumps(exc))
            assert type(clone) is type(exc) and str(clone) == str(exc)
        else:
            pytest.fail("n=0 was accepted")
