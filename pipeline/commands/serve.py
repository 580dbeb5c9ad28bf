"""`editroute serve`: the OpenAI-compatible edit endpoint in front of a routing policy, and the review page of
its outputs at /review (behind the same keys)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve POST /v1/images/edits (OpenAI-compatible) routed by a policy", description=__doc__
    )
    p.add_argument("--policy", required=True, type=Path, help="routing policy YAML (see configs/policies/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need keys)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("editroute-out"),
        metavar="DIR",
        help="outputs and the ledger DIR/editroute.db; share it with `editroute run` so budgets hold "
        "across both (default ./editroute-out)",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="bearer keys clients must send, one per line (also $EDITROUTE_API_KEYS, comma-separated)",
    )
    from pipeline.serve import ServeSettings  # settings.py only: cheap

    d = ServeSettings()
    g = p.add_argument_group("serving (docs/server.md)")
    g.add_argument(
        "--api-concurrency",
        type=int,
        default=d.api_concurrency,
        metavar="N",
        help=f"calls in flight per API backend whose policy sets no concurrency: (default {d.api_concurrency})",
    )
    g.add_argument(
        "--max-retry-wait",
        type=float,
        default=d.max_retry_wait_s,
        metavar="SECONDS",
        help="seconds one request may wait between upstream retries in all; a longer retry-after goes to the client "
        f"(default {d.max_retry_wait_s:g})",
    )
    g.add_argument(
        "--retry-window",
        type=float,
        default=d.retry_window_s,
        metavar="SECONDS",
        help=f"how long an SDK retry may still join its first try (default {d.retry_window_s:g})",
    )
    g.add_argument(
        "--fetch-image-urls",
        action="store_true",
        help="download https image_url references of JSON bodies here (default: passed to the provider)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f'editroute serve needs {exc.name!r}: pip install "editroute[server]"') from None
    from rich.console import Console

    from pipeline.serve import ServeConfig, ServeSettings, bind_socket, build, uvicorn_server

    settings = ServeSettings(
        api_concurrency=args.api_concurrency,
        max_retry_wait_s=args.max_retry_wait,
        retry_window_s=args.retry_window,
        fetch_image_urls=args.fetch_image_urls,
    )
    config = ServeConfig(
        policy=args.policy, out_dir=args.out, host=args.host, api_key_file=args.api_key_file, settings=settings
    )
    sock = bind_socket(args.host, args.port)  # a busy port fails here, before anything is announced
    try:
        app, service, keys = build(config)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    mount_review(app, service.out_dir, keys)
    console = Console(stderr=True, highlight=False)
    host = f"[{args.host}]" if ":" in args.host else args.host
    console.print(
        f"editroute serve: listening on http://{host}:{port}/v1 "
        f"(policy {args.policy}, backends: {', '.join(service.policy.backends)})"
    )
    if keys:
        console.print(f"  auth: on ({len(keys)} key(s)); clients send Authorization: Bearer <key>")
    else:
        console.print(
            "  auth: OFF (no client keys for this server: --api-key-file or $EDITROUTE_API_KEYS): loopback only",
            style="yellow",
        )
    console.print(f"  ledger: {service.ledger.path}   outputs: {service.out_dir}/<job id>/")
    for line in service.describe_limits():  # how many calls each backend runs at once, and why
        console.print(f"  backend {line}")
    console.print(f"  review page: http://{host}:{port}/review/" + (" (log in with a key)" if keys else ""))
    console.print(f'  try: OpenAI(base_url="http://{host}:{port}/v1", api_key=...).images.edit(...)')
    uvicorn_server(app, args.host, port).run(sockets=[sock])
    return 0


def mount_review(app, out_dir: Path, keys: tuple[str, ...]) -> None:
    """The review page at /review over the server's own run folder, behind the same keys. Mounted here, at the
    command level, because the serve and review wings are siblings and do not import each other."""
    from pipeline.commands.review import default_reviewer
    from pipeline.review import create_review_app

    app.mount("/review", create_review_app(out_dir, reviewer=default_reviewer(), api_keys=keys))
