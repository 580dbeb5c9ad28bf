"""`editroute review OUT_DIR`: look at a run's outputs in a browser and accept or reject each one with the keyboard;
`--export FILE` writes the decisions as measured quality (acceptance per backend and tier, Wilson 95% intervals)
for a policy's `quality_file:`. See docs/review.md."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
from pathlib import Path

from pipeline.errors import ConfigError

DEFAULT_PORT = 8765
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="review a run's outputs in the browser (a/r/s to accept/reject/skip); export measured quality",
        description=__doc__,
    )
    p.add_argument("dir", type=Path, help="the --out folder of `editroute run` (or `demo`, `eval`)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; loopback only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument(
        "--reviewer",
        default=None,
        metavar="NAME",
        help="the name decisions are recorded under (default: $EDITROUTE_REVIEWER, else your login name)",
    )
    p.add_argument(
        "--export",
        type=Path,
        metavar="FILE",
        help="write the decisions as a quality file (for a policy's quality_file:) and exit, serving nothing",
    )
    p.set_defaults(func=run)


def default_reviewer() -> str:
    try:
        return os.environ.get("EDITROUTE_REVIEWER") or getpass.getuser()
    except (KeyError, OSError):  # no login name in a container without /etc/passwd entry
        return "reviewer"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipeline.review import Catalog

    console = Console(stderr=True, highlight=False)
    sock = None if args.export is not None else listen(args)  # a bad host or a busy port fails before indexing
    try:
        catalog = Catalog(args.dir)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    try:
        with console.status("indexing the run for review ..."):
            indexed = catalog.sync()
        if indexed:
            console.print(f"indexed {indexed} job(s) of {catalog.out_dir}")
        if sock is None:
            return export(catalog, args.export, console)
        return serve(catalog, sock, args, console)
    finally:
        catalog.close()
        if sock is not None:
            sock.close()


def listen(args: argparse.Namespace) -> socket.socket:
    """The bound socket the page will be served on (after checking the server extra and the host)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f'editroute review needs {exc.name!r}: pip install "editroute[server]"') from None
    if args.host not in LOOPBACK:
        raise ConfigError(
            f"--host {args.host}: the review page has no login of its own, so it listens on loopback only; to "
            "share it, run `editroute serve` with API keys (it serves the same page at /review)"
        )
    from pipeline.serve import bind_socket

    return bind_socket(args.host, args.port)  # before saying where it listens: a busy port fails here, plainly


def export(catalog, target: Path, console) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.review import write_quality_file

    rows = write_quality_file(catalog.ledger, catalog.out_dir, target, stand_ins=catalog.stand_ins)
    table = Table(title="measured quality: accepted / judged (95% Wilson interval)", title_justify="left")
    for col in ("backend", "tier", "accepted", "judged", "skipped", "rate"):
        table.add_column(col, justify="left" if col in ("backend", "tier") else "right")
    for m in rows:
        low, high = m.interval
        rate = f"{m.rate:.0%} ({low:.0%}-{high:.0%})" if m.rate is not None else "-"
        table.add_row(m.backend, m.tier, str(m.accepted), str(m.judged), str(m.skipped), rate)
    Console(highlight=False).print(table)
    if not rows:
        console.print("[yellow]no decisions yet: the file has no scores[/]")
    console.print(f"wrote {target}")
    if catalog.stand_ins:
        console.print(
            f"[bold yellow]STAND-INS[/]: {catalog.stand_ins}. The file says `source: stand-ins`, and a policy "
            "refuses to route on it unless it sets `allow_stand_in_quality: true` (demos and tests only).",
            soft_wrap=True,
        )
    else:
        console.print(
            f"use it: add `quality_file: {target.resolve()}` to a policy; a rate replaces the declared score once "
            "it rests on quality_min_samples judged outputs (default 30); `editroute plan --explain` says which won",
            soft_wrap=True,
        )
    return 0


def serve(catalog, sock: socket.socket, args: argparse.Namespace, console) -> int:
    import uvicorn

    from pipeline.review import create_review_app

    reviewer = args.reviewer or default_reviewer()
    app = create_review_app(catalog.out_dir, reviewer=reviewer, catalog=catalog)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=port, log_level="warning", access_log=False))
    host = f"[{args.host}]" if ":" in args.host else args.host
    if catalog.stand_ins:
        console.print(f"[bold yellow]STAND-INS[/]: {catalog.stand_ins}", soft_wrap=True)
    console.print(
        f"editroute review: http://{host}:{port}/ (run {catalog.out_dir}, reviewer {reviewer}); "
        "keys: a accept, r reject, s skip, n note, Enter before/after, ? help; Ctrl-C stops",
        soft_wrap=True,
    )
    server.run(sockets=[sock])
    return 0
