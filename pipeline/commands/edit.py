"""`editroute edit`: one edit on one backend, from the command line; writes DIR/<k>.<format> and prints the cost."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

from backends.base import BACKGROUNDS, INPUT_FIDELITIES, OUTPUT_FORMATS, QUALITIES, EditRequest
from backends.images import InputImage
from pipeline.errors import ConfigError

# CLI option -> the backend Settings field it sets (passed only when given, and only if the kind has it).
_SETTING_OPTIONS = {"model": "model", "base_url": "base_url", "api_key_file": "api_key_file", "device": "device"}


def register(subparsers) -> None:
    p = subparsers.add_parser("edit", help="run one edit on one backend and write the images", description=__doc__)
    p.add_argument(
        "--backend", default="openai", metavar="KIND", help="backend kind: openai, sdxl, qwen-edit, flux2-klein, ..."
    )
    p.add_argument(
        "--image",
        action="append",
        required=True,
        type=Path,
        metavar="PATH",
        help="input image (png/webp/jpeg); repeat for up to 16",
    )
    p.add_argument("--mask", type=Path, metavar="PATH", help="PNG whose transparent pixels mark the area to edit")
    p.add_argument("--prompt", required=True)
    p.add_argument("-n", type=int, default=1, help="number of images (1-10)")
    p.add_argument("--size", default="auto", help="1024x1024 | 1536x1024 | 1024x1536 | auto | WxH")
    p.add_argument("--quality", default="auto", choices=QUALITIES)
    p.add_argument("--output-format", default="png", choices=OUTPUT_FORMATS)
    p.add_argument("--output-compression", type=int, metavar="0-100", help="jpeg/webp only")
    p.add_argument("--background", default="auto", choices=BACKGROUNDS)
    p.add_argument("--input-fidelity", choices=INPUT_FIDELITIES)
    p.add_argument("--seed", type=int, help="self-hosted backends only")
    p.add_argument(
        "--model", help="backend model: e.g. gpt-image-1-mini; a self-hosted hub id or save_pretrained directory"
    )
    p.add_argument(
        "--base-url", help="OpenAI-compatible API base URL (default $OPENAI_BASE_URL, else https://api.openai.com/v1)"
    )
    p.add_argument("--api-key-file", type=Path, help="read the API key from this file instead of $OPENAI_API_KEY")
    p.add_argument("--device", help="torch device for self-hosted backends (cuda, cpu, ...)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the results")
    p.set_defaults(func=run)


def backend_settings(kind: str, args: argparse.Namespace) -> dict:
    """The settings the user gave, checked against the kind's Settings fields."""
    from backends.registry import UnknownBackendKind, backend_class

    try:
        cls = backend_class(kind)
    except UnknownBackendKind as exc:
        raise ConfigError(f"--backend: {exc}") from None
    given = {field: getattr(args, opt) for opt, field in _SETTING_OPTIONS.items() if getattr(args, opt) is not None}
    known = getattr(getattr(cls, "Settings", None), "model_fields", {})
    for field in given:
        if field not in known:
            option = "--" + field.replace("_", "-")
            raise ConfigError(
                f"{option} does not apply to backend kind {kind!r} (its settings: {', '.join(known) or 'none'})"
            )
    return {k: str(v) if isinstance(v, Path) else v for k, v in given.items()}


def exact_usd(usd: Decimal) -> str:
    """The cost as billed: token costs are exact as they are; a measured GPU cost (seconds x rate) is cut to the
    ledger's nano-dollar instead of 28 digits."""
    if usd.as_tuple().exponent < -9:  # type: ignore[operator]
        usd = usd.quantize(Decimal("1e-9")).normalize()
    return f"${usd:f}"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from backends.registry import create_backend
    from backends.validation import check_request
    from pipeline.run import atomic_write_bytes

    console = Console(highlight=False, markup=False, soft_wrap=True)
    images = tuple(
        InputImage.from_path(p, field="image" if len(args.image) == 1 else f"image[{i}]")
        for i, p in enumerate(args.image)
    )
    mask = InputImage.from_path(args.mask, field="mask") if args.mask else None
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
        seed=args.seed,
        job_id="cli",
    ).materialized()
    backend = create_backend(args.backend, args.backend, backend_settings(args.backend, args))
    if args.seed is not None and args.backend == "openai":
        Console(stderr=True, highlight=False).print("note: --seed is ignored: OpenAI's image API takes no seed")
    try:
        check_request(request, backend.capabilities, backend=backend.name)  # before anything is printed or paid
        estimate = backend.estimate(request)
        console.print(f"estimate: {exact_usd(estimate.usd)} ({estimate.basis})")
        result = backend.edit(request)
    finally:
        backend.close()
    for k, data in enumerate(result.images):  # 0.png, 1.png, ...: as `editroute run` names them
        path = args.out / f"{k}.{result.output_format}"
        atomic_write_bytes(path, data)
        console.print(f"wrote {path} ({result.width}x{result.height} {result.output_format}, {len(data)} bytes)")
    u = result.usage
    basis = result.extras.get("cost_basis", "usage")
    console.print(f"cost: {exact_usd(result.cost_usd)} ({result.backend}, {result.model}, from {basis})")
    console.print(
        f"usage: input_tokens={u.input_tokens} (text {u.input_text_tokens}, image {u.input_image_tokens})"
        f" output_tokens={u.output_tokens} total_tokens={u.total_tokens}"
        + (f" gpu_seconds={u.gpu_seconds:.3f}" if u.gpu_seconds else "")
    )
    return 0
