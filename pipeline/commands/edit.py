"""`editroute edit`: one edit on one backend, from the command line; writes DIR/<k>.<format> and prints the cost.

A backend that keeps a call journal (`resumable`: openai, firefly) keeps it in DIR/.edit-journal-<key>.json, the
key hashing the backend and the whole request: the same command run again after a kill finishes what was paid
for (polls the submitted Firefly job, decodes the saved OpenAI answer) instead of paying again."""

from __future__ import annotations

import argparse
import hashlib
import json
from decimal import Decimal
from pathlib import Path

from backends.base import (
    BACKGROUNDS,
    COMPLEXITIES,
    INPUT_FIDELITIES,
    MODERATIONS,
    OUTPUT_FORMATS,
    QUALITIES,
    EditRequest,
)
from backends.images import InputImage
from pipeline.errors import ConfigError

# CLI options that set the backend Settings field of the same name (passed only when given, and only if the kind
# has it).
_SETTING_OPTIONS = (
    "model",
    "base_url",
    "api_key_file",
    "device",
    "unverified_features",
    "token_url",
    "client_id_file",
    "client_secret_file",
    "maskless",
    "price_per_operation_usd",
    "requests_per_minute",
)
FILE_ID_PREFIX = "file_id:"  # --image file_id:file-abc (an OpenAI Files id)


def register(subparsers) -> None:
    p = subparsers.add_parser("edit", help="run one edit on one backend and write the images", description=__doc__)
    p.add_argument(
        "--backend",
        default="openai",
        metavar="KIND",
        help="backend kind: openai, gemini, firefly, sdxl, qwen-edit, flux2-klein (default: openai)",
    )
    p.add_argument(
        "--image",
        action="append",
        required=True,
        metavar="PATH|URL",
        help="input image (png/webp/jpeg), an https URL or file_id:ID (OpenAI only); repeat for up to 16",
    )
    p.add_argument("--mask", metavar="PATH|URL", help="PNG whose transparent pixels mark the area to edit")
    p.add_argument(
        "--markup", metavar="PATH|URL", help="transparent PNG of annotations over the first image (not with --mask)"
    )
    p.add_argument("--prompt", required=True)
    p.add_argument("-n", type=int, default=1, help="number of images (1-10)")
    p.add_argument("--size", default="auto", help="1024x1024 | 1536x1024 | 1024x1536 | auto | WxH")
    p.add_argument("--quality", default="auto", choices=QUALITIES, help="quality tier")
    p.add_argument("--output-format", default="png", choices=OUTPUT_FORMATS, help="format of the written images")
    p.add_argument("--output-compression", type=int, metavar="0-100", help="jpeg/webp only")
    p.add_argument("--background", default="auto", choices=BACKGROUNDS, help="transparent needs png or webp")
    p.add_argument("--input-fidelity", choices=INPUT_FIDELITIES, help="not for gpt-image-2.x (always high fidelity)")
    p.add_argument("--complexity", choices=COMPLEXITIES, help="planning effort, independent of quality")
    p.add_argument("--moderation", choices=MODERATIONS, help="content moderation level (sent as a JSON body)")
    p.add_argument("--safety-identifier", metavar="ID", help="a stable hashed id of your end user (<= 128 chars)")
    p.add_argument("--frame-count", type=int, metavar="2-16", help="gif output only")
    p.add_argument("--frame-duration-ms", type=int, metavar="MS", help="gif output only (>= 20)")
    p.add_argument("--seed", type=int, help="self-hosted backends only")
    p.add_argument(
        "--model",
        help="backend model (openai default: gpt-image-2.6-flare); self-hosted: a hub id or save_pretrained dir",
    )
    p.add_argument(
        "--unverified-feature",
        dest="unverified_features",
        action="append",
        metavar="NAME",
        help="opt into a capability no source settles for the model (docs/openai.md); repeatable",
    )
    p.add_argument(
        "--base-url",
        help="API base URL (openai: default $OPENAI_BASE_URL, else https://api.openai.com/v1; gemini: "
        "$GOOGLE_GEMINI_BASE_URL, else Google's; firefly: https://firefly-api.adobe.io)",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        help="read the API key from this file (openai: else $OPENAI_API_KEY, gemini: else $GEMINI_API_KEY)",
    )
    firefly = p.add_argument_group("firefly (client id and secret: else $FIREFLY_SERVICES_CLIENT_ID / _SECRET)")
    firefly.add_argument("--token-url", help="Adobe IMS token endpoint (default: Adobe's)")
    firefly.add_argument("--client-id-file", type=Path, help="read the client id from this file")
    firefly.add_argument("--client-secret-file", type=Path, help="read the client secret from this file")
    firefly.add_argument(
        "--maskless",
        choices=("instruct", "expand", "refuse"),
        help="what an edit without a mask becomes (default: instruct)",
    )
    firefly.add_argument(
        "--price-per-operation-usd", type=Decimal, metavar="USD", help="your contract's rate (default: a placeholder)"
    )
    p.add_argument(
        "--requests-per-minute",
        type=float,
        metavar="N",
        help="gemini, firefly: pace their HTTP requests (default: gemini none, firefly Adobe's 4)",
    )
    p.add_argument("--device", help="torch device for self-hosted backends (cuda, cpu, ...)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the results")
    p.add_argument(
        "--overwrite", action="store_true", help="replace earlier outputs of the same names in --out (else refuse)"
    )
    p.set_defaults(func=run)


def backend_settings(kind: str, args: argparse.Namespace) -> dict:
    """The settings the user gave, checked against the kind's Settings fields."""
    from backends.registry import UnknownBackendKind, backend_class

    try:
        cls = backend_class(kind)
    except UnknownBackendKind as exc:
        raise ConfigError(f"--backend: {exc}") from None
    given = {field: getattr(args, field) for field in _SETTING_OPTIONS if getattr(args, field) is not None}
    known = getattr(getattr(cls, "Settings", None), "model_fields", {})
    for field in given:
        if field not in known:
            option = "--" + field.replace("_", "-")
            raise ConfigError(
                f"{option} does not apply to backend kind {kind!r} (its settings: {', '.join(known) or 'none'})"
            )
    return {k: str(v) if isinstance(v, Path) else v for k, v in given.items()}


def journal_path(out: Path, kind: str, settings: dict, request: EditRequest) -> Path:
    """Where a resumable backend's journal for this exact edit lives: the same command again resumes it, any other
    edit into the same folder gets its own."""
    h = hashlib.sha256(json.dumps([kind, settings], sort_keys=True, default=str).encode())
    for field in sorted(f for f in vars(request) if f not in ("images", "mask", "markup", "job_id")):
        h.update(f"{field}={getattr(request, field)!r};".encode())
    for _, img in request.inputs:
        h.update(img.ref.encode() if img.is_remote else hashlib.sha256(img.read()).digest())
    return out / f".edit-journal-{h.hexdigest()[:16]}.json"


def input_image(spec: str, field: str) -> InputImage:
    """A local path, an https URL, or file_id:ID."""
    if spec.startswith(FILE_ID_PREFIX):
        return InputImage.remote(file_id=spec[len(FILE_ID_PREFIX) :], field=field)
    if spec.lower().startswith(("https://", "http://")):
        return InputImage.remote(url=spec, field=field)
    return InputImage.from_path(Path(spec), field=field)


def exact_usd(usd: Decimal) -> str:
    """The cost as billed: token costs are exact as they are; a measured GPU cost (seconds x rate) is cut to the
    ledger's nano-dollar instead of 28 digits."""
    if usd.as_tuple().exponent < -9:  # type: ignore[operator]
        usd = usd.quantize(Decimal("1e-9")).normalize()
    return f"${usd:f}"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from backends.registry import create_backend
    from backends.validation import check_request, skipped_checks
    from pipeline.run import (
        atomic_write_bytes,
        check_disk_space,
        check_existing_outputs,
        check_out_dir,
        output_bytes_bound,
    )

    console = Console(highlight=False, markup=False, soft_wrap=True)
    images = tuple(
        input_image(p, field="image" if len(args.image) == 1 else f"image[{i}]") for i, p in enumerate(args.image)
    )
    mask = input_image(args.mask, field="mask") if args.mask else None
    markup = input_image(args.markup, field="markup") if args.markup else None
    request = EditRequest(
        prompt=args.prompt,
        images=images,
        mask=mask,
        size=args.size,
        quality=args.quality,
        n=args.n,
        output_format=args.output_format,
        output_compression=args.output_compression,
        background=args.background,
        input_fidelity=args.input_fidelity,
        complexity=args.complexity,
        moderation=args.moderation,
        safety_identifier=args.safety_identifier,
        markup=markup,
        frame_count=args.frame_count,
        frame_duration_ms=args.frame_duration_ms,
        seed=args.seed,
        job_id="cli",
    ).materialized()
    settings = backend_settings(args.backend, args)
    backend = create_backend(args.backend, args.backend, settings)
    if args.seed is not None and args.backend == "openai":
        Console(stderr=True, highlight=False).print("note: --seed is ignored: OpenAI's image API takes no seed")
    try:
        check_request(request, backend.capabilities, backend=backend.name)  # before anything is printed or paid
        for note in skipped_checks(request):
            Console(stderr=True, highlight=False, markup=False).print(f"note: {note}")
        out = check_out_dir(args.out)
        names = [f"{k}.{request.output_format}" for k in range(request.n)]
        check_existing_outputs(out, names, overwrite=args.overwrite)
        check_disk_space(out, output_bytes_bound(request), what=f"{request.n} image(s)")
        estimate = backend.estimate(request)
        console.print(f"estimate: {exact_usd(estimate.usd)} ({estimate.basis})")
        journal = journal_path(out, args.backend, settings, request)
        result = _edit(backend, request, journal, console)
    finally:
        backend.close()
    for k, data in enumerate(result.images):  # 0.png, 1.png, ...: as `editroute run` names them
        path = args.out / f"{k}.{result.output_format}"
        atomic_write_bytes(path, data)
        console.print(f"wrote {path} ({result.width}x{result.height} {result.output_format}, {len(data)} bytes)")
    journal.unlink(missing_ok=True)  # only now: a failed write or a kill before this resumes, never pays again
    if isinstance(result.extras.get("resized"), str):
        console.print(f"resized: {result.extras['resized']} (size {request.size})")
    u = result.usage
    basis = result.extras.get("cost_basis", "usage")
    console.print(f"cost: {exact_usd(result.cost_usd)} ({result.backend}, {result.model}, from {basis})")
    console.print(
        f"usage: input_tokens={u.input_tokens} (text {u.input_text_tokens}, image {u.input_image_tokens})"
        f" output_tokens={u.output_tokens} total_tokens={u.total_tokens}"
        + (f" gpu_seconds={u.gpu_seconds:.3f}" if u.gpu_seconds else "")
    )
    return 0


def _edit(backend, request: EditRequest, path: Path, console) -> object:
    """`backend.edit`, with a file journal for a resumable backend (kept if the edit fails with something to
    resume; on success the caller removes it once the images are written)."""
    from backends.journal import FileJournal, takes_journal

    if not takes_journal(backend):
        return backend.edit(request)
    made_folder = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)  # the journal is saved before any output is written
    journal = FileJournal(path)
    if journal.load():
        console.print(f"resuming from {path} (what was paid for before is finished, not paid again)")
    try:
        result = backend.edit(request, journal=journal)
    except BaseException:
        if journal.load():
            console.print(f"kept {path}: run the same command again to resume")
        else:
            path.unlink(missing_ok=True)
            if made_folder and not any(path.parent.iterdir()):
                path.parent.rmdir()
        raise
    return result
