"""The Firefly stand-in's request rules (schemas of `firefly-api.json` 3.0.0), async jobs and fake "models".

fill     paints a prompt-coloured patch ONLY where the mask is white (`invert: true` flips it); pixels where the
         mask is black are the source's. This is how a test proves the client converted OpenAI's mask.
expand   the source scaled to fit the new size, centred, the rest filled with a prompt-coloured ramp.
instruct (Image 5) the whole reference tinted, at the resolution level's area.
Outputs are made at submit time and served as S3-style pre-signed URLs minted at each status answer.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from PIL import Image

from backends.standins.firefly_server import TRIGGERS, FireflyError, Job, invalid
from backends.standins.loopback import Reply, Request, json_reply

if TYPE_CHECKING:
    from backends.standins.firefly_server import FakeFireflyServer

FILL_SIZES = {
    (2048, 2048),
    (1024, 1024),
    (2304, 1792),
    (1792, 2304),
    (2688, 1536),
    (1344, 768),
    (1152, 896),
    (896, 1152),
}
UPLOAD_TYPES = {"image/jpeg", "image/png", "image/webp", "image/tiff", "image/jxl"}
LEVELS = {"1MP": 1.0, "2.4MP": 2.4, "4MP": 4.0}
KEYS = {
    "fill": {"image", "mask", "prompt", "negativePrompt", "numVariations", "seeds", "size", "promptBiasingLocaleCode"},
    "expand": {"image", "mask", "prompt", "numVariations", "seeds", "size", "placement"},
    "instruct": {
        "prompt",
        "aspectRatio",
        "resolutionLevel",
        "modelId",
        "modelSpecificPayload",
        "numVariations",
        "referenceBlobs",
        "seeds",
    },
}


def handle(server: FakeFireflyServer, kind: str, req: Request) -> Reply:
    if kind == "upload":
        return _upload(server, req)
    if kind in KEYS:
        return _submit(server, kind, req)
    if kind == "status":
        return _status(server, req.path.removeprefix("/v3/status/"))
    if kind == "cancel":
        job = server.jobs.get(req.path.removeprefix("/v3/cancel/"))
        if job is None:
            raise FireflyError(404, "not_found", "Job not found")
        if job.polls >= server.polls_to_finish:
            raise FireflyError(409, "job_completed", "The job has already completed")
        job.outcome = ("cancelled", "cancelled", "Cancelled by the client")
        return json_reply(200, {})
    raise FireflyError(404, "not_found", f"No route for {req.method} {req.path}")


def _upload(server: FakeFireflyServer, req: Request) -> Reply:
    mime = req.headers.get("content-type", "").split(";")[0].strip()
    if mime not in UPLOAD_TYPES:
        raise FireflyError(415, "invalid_content_type", f"Unsupported content type: {mime or 'none'}")
    if len(req.body) > 15 * 1024 * 1024:
        return Reply(413, b"<html><body><h1>413 Request Entity Too Large</h1></body></html>", "text/html")
    _decode(req.body, "the uploaded image")
    upload_id = str(uuid.uuid4())
    server.uploads[upload_id] = (mime, req.body)
    return json_reply(200, {"images": [{"id": upload_id}]})


def _decode(data: bytes, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except Exception:  # noqa: BLE001 - any decoder failure is the same answer
        raise FireflyError(400, "bad_request", f"Unable to decode {what}") from None


def _source(server: FakeFireflyServer, source: Any, loc: list) -> Image.Image:
    upload_id = source.get("uploadId") if isinstance(source, dict) else None
    if not upload_id:
        raise invalid([*loc, "uploadId"], "field required", "value_error.missing")
    if upload_id not in server.uploads:
        raise FireflyError(400, "bad_request", f"Unable to fetch the input: unknown uploadId {upload_id}")
    return _decode(server.uploads[upload_id][1], f"upload {upload_id}")


def _variations(body: dict, most: int) -> list[int]:
    n, seeds = body.get("numVariations"), body.get("seeds")
    if n is not None and not (isinstance(n, int) and 1 <= n <= most):
        raise invalid(["numVariations"], f"ensure this value is between 1 and {most}")
    if seeds is not None:
        if not isinstance(seeds, list) or not 1 <= len(seeds) <= most or len(set(seeds)) != len(seeds):
            raise invalid(["seeds"], f"1 to {most} unique integers")
        if n is not None and len(seeds) != n:
            raise invalid(["seeds"], "the number of seeds must equal numVariations")
        return list(seeds)
    return [int.from_bytes(uuid.uuid4().bytes[:3], "big") for _ in range(n or 1)]


def _colour(prompt: str, seed: int) -> tuple[int, int, int]:
    d = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
    return d[0], d[1], d[2]


def _submit(server: FakeFireflyServer, kind: str, req: Request) -> Reply:
    if not req.headers.get("content-type", "").startswith("application/json"):
        raise FireflyError(415, "invalid_content_type", "Expected application/json")
    try:
        body = req.json()
    except ValueError:
        raise FireflyError(400, "bad_request", "Malformed JSON") from None
    if not body:
        raise FireflyError(400, "empty_input_body", "The request body is empty")
    for key in body:
        if key not in KEYS[kind]:
            raise invalid([key], "extra fields not permitted", "value_error.extra")
    prompt = body.get("prompt", "")
    limit = 1500 if kind == "instruct" else 1024
    if not isinstance(prompt, str) or len(prompt) > limit or (kind == "instruct" and not prompt):
        raise invalid(["prompt"], f"ensure this value has 1 to {limit} characters")
    outputs = _instruct(server, req, body) if kind == "instruct" else _fill(body) if kind == "fill" else _expand(body)
    job_id = f"urn:ff:jobs:standin:{uuid.uuid4()}"
    images = [(seed, _encode(server, img)) for seed, img in outputs(server)]
    job = Job(kind=kind, body=body, outputs=images)
    job.outcome = next((v for word, v in TRIGGERS.items() if word in prompt.lower()), None)
    server.jobs[job_id] = job
    status_url, cancel_url = f"{server.base_url}/v3/status/{job_id}", f"{server.base_url}/v3/cancel/{job_id}"
    if kind == "instruct":
        return json_reply(
            200, {"links": {"result": {"href": status_url}, "cancel": {"href": cancel_url}}, "progress": 0}
        )
    return json_reply(
        202,
        {"jobId": job_id, "statusUrl": status_url, "cancelUrl": cancel_url},
        {"Link": f'<{status_url}>; rel="status", <{cancel_url}>; rel="cancel"'},
    )


def _size(body: dict, limit: int) -> tuple[int, int]:
    size = body.get("size") or {"width": 2048, "height": 2048}
    w, h = size.get("width"), size.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and 1 <= w <= limit and 1 <= h <= limit):
        raise invalid(["size"], f"width and height must be 1 to {limit}")
    return w, h


def _fill(body: dict):
    size = _size(body, 4096)
    if size not in FILL_SIZES:
        raise invalid(
            ["size"],
            f"unsupported size {size[0]}x{size[1]}; supported: " + ", ".join(f"{w}x{h}" for w, h in sorted(FILL_SIZES)),
        )
    if "mask" not in body:
        raise invalid(["mask"], "field required", "value_error.missing")
    seeds = _variations(body, 4)

    def make(server: FakeFireflyServer):
        source = _source(server, (body.get("image") or {}).get("source"), ["image", "source"])
        mask = _source(server, body["mask"].get("source"), ["mask", "source"])
        if mask.size != source.size:  # an assumption (not in the spec): conservative clients match them
            raise invalid(
                ["mask"], f"mask {mask.width}x{mask.height} must match the image {source.width}x{source.height}"
            )
        region = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
        if body["mask"].get("invert"):
            region = region.point(lambda v: 255 - v)
        base = source.convert("RGB")
        out = []
        for seed in seeds:
            img = base.copy()
            img.paste(_colour(body.get("prompt", ""), seed), (0, 0, *img.size), region)
            out.append((seed, img.resize(size, Image.Resampling.BILINEAR) if img.size != size else img))
        return out

    return make


def _expand(body: dict):
    size = _size(body, 3999)
    if "mask" in body and "placement" in body:
        raise invalid(["placement"], "placement cannot be combined with a mask")
    seeds = _variations(body, 4)

    def make(server: FakeFireflyServer):
        source = _source(server, (body.get("image") or {}).get("source"), ["image", "source"]).convert("RGB")
        scale = min(size[0] / source.width, size[1] / source.height)
        w, h = max(1, round(source.width * scale)), max(1, round(source.height * scale))
        out = []
        for seed in seeds:
            c = _colour(body.get("prompt", ""), seed)
            img = Image.linear_gradient("L").resize(size).convert("RGB")
            img = Image.blend(img, Image.new("RGB", size, c), 0.6)
            img.paste(source.resize((w, h)), ((size[0] - w) // 2, (size[1] - h) // 2))
            out.append((seed, img))
        return out

    return make


def _instruct(server: FakeFireflyServer, req: Request, body: dict):
    if req.headers.get("x-model-version") != "image5":
        raise FireflyError(400, "bad_request", "x-model-version: image5 is required on /v4")
    prompt = body["prompt"]
    if "unsafe-prompt" in prompt.lower():
        raise FireflyError(451, "prompt_unsafe", "The prompt violates the content policy.")
    refs = body.get("referenceBlobs") or []
    if len(refs) > 1 or body.get("numVariations", 1) != 1:
        raise invalid(["referenceBlobs" if len(refs) > 1 else "numVariations"], "ensure at most 1 item")
    if refs and body.get("aspectRatio") not in (None, "auto"):
        raise invalid(["aspectRatio"], "must be omitted or auto when referenceBlobs is not empty")
    level = body.get("resolutionLevel", "2.4MP")
    if level not in LEVELS:
        raise invalid(["resolutionLevel"], f"one of {', '.join(LEVELS)}")
    seeds = _variations(body, 1)

    def make(server: FakeFireflyServer):
        if not refs:
            raise FireflyError(400, "bad_request", "This stand-in only edits: send one referenceBlobs entry")
        ref = _source(server, refs[0].get("source"), ["referenceBlobs", 0, "source"]).convert("RGB")
        if not 512 * 512 <= ref.width * ref.height <= 2048 * 2048:
            raise invalid(["referenceBlobs", 0], "the reference image area must be between 512x512 and 2048x2048")
        r = ref.width / ref.height
        w = math.sqrt(LEVELS[level] * 1024 * 1024 * r)
        size = (max(8, round(w / 8) * 8), max(8, round(w / r / 8) * 8))
        return [(seeds[0], Image.blend(ref.resize(size), Image.new("RGB", size, _colour(prompt, seeds[0])), 0.3))]

    return make


def _encode(server: FakeFireflyServer, img: Image.Image) -> bytes:
    buf = io.BytesIO()
    if server.output_mime == "image/png":
        img.save(buf, format="PNG")
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _status(server: FakeFireflyServer, job_id: str) -> Reply:
    job = server.jobs.get(job_id)
    if job is None:
        raise FireflyError(404, "not_found", f"Job {job_id} not found")
    job.polls += 1
    if job.polls < server.polls_to_finish and (job.outcome is None or job.outcome[0] != "cancelled"):
        headers = {"retry-after": server.status_retry_after} if server.status_retry_after else {}
        return json_reply(200, {"status": "pending" if job.polls == 1 else "running", "jobId": job_id}, headers)
    if job.outcome is not None:
        status, code, message = job.outcome
        return json_reply(200, {"status": status, "jobId": job_id, "error_code": code, "message": message})
    outputs = []
    for seed, data in job.outputs:
        key = uuid.uuid4().hex
        server._urls[key] = (data, time.monotonic() + server.url_ttl_s)
        outputs.append(
            {
                "seed": seed,
                "image": {
                    "url": f"{server.base_url}/presigned/{key}?X-Amz-Algorithm=AWS4-"
                    f"HMAC-SHA256&X-Amz-Expires={int(server.url_ttl_s)}"
                    f"&X-Amz-Signature={key[:16]}"
                },
            }
        )
    with Image.open(io.BytesIO(job.outputs[0][1])) as first:
        size = {"width": first.width, "height": first.height}
    return json_reply(
        200,
        {"status": "succeeded", "jobId": job_id, "result": {"size": size, "outputs": outputs, "contentClass": "photo"}},
    )


def _s3_error(status: int, code: str, message: str) -> Reply:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<RequestId>STANDIN</RequestId></Error>"
    ).encode()
    return Reply(status, body, "application/xml")


def download(server: FakeFireflyServer, req: Request) -> Reply:
    if "authorization" in req.headers:
        return _s3_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
            "parameter, Signature query string parameter or the Authorization "
            "header should be specified",
        )
    entry = server._urls.get(req.path.removeprefix("/presigned/"))
    if entry is None:
        return _s3_error(403, "AccessDenied", "Access Denied")
    data, expires = entry
    if time.monotonic() > expires:
        return _s3_error(403, "AccessDenied", "Request has expired")
    return Reply(200, data, server.output_mime)
