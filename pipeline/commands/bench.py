"""`editroute bench cost | overhead`: the benchmarks in `pipeline.bench`, one subcommand each.

The work lives in `pipeline/bench/`; this module only parses flags and prints a short summary.
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from pathlib import Path

from pipeline.errors import ConfigError


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _volumes(text: str) -> tuple[int, ...]:
    try:
        vols = tuple(sorted({int(float(v)) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"volumes are comma-separated numbers: {text!r}") from None
    if not vols or vols[0] <= 0:
        raise argparse.ArgumentTypeError(f"volumes must be positive: {text!r}")
    return vols


def _acceptance(text: str) -> tuple[str, float]:
    name, sep, rate = text.partition("=")
    try:
        value = float(rate.rstrip("%")) / (100 if rate.endswith("%") else 1)
    except ValueError:
        value = -1.0
    if not sep or not name.strip() or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected NAME=RATE with a rate in (0, 1] or a percentage: {text!r}")
    return name.strip(), value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="cost model over volume, pipeline overhead (see benchmarks/RESULTS.md)")
    bench = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)

    c = bench.add_parser("cost", help="cost per image, per month and break-even; markdown, CSV and PNG plots")
    c.add_argument("--out", type=Path, required=True, help="directory for cost.md, *.csv and *.png")
    c.add_argument("--gpu", help="the card SDXL runs on (a prices.yaml gpu_hourly key, e.g. A100-80GB, H100)")
    c.add_argument(
        "--seconds-per-image",
        type=float,
        help="measured seconds per 1024x1024 high-tier SDXL edit on --gpu (default: RESULTS.md "
        "measurement, else a published figure)",
    )
    c.add_argument("--gpu-hourly", type=_usd, help="USD per GPU-hour instead of the prices.yaml list rate")
    c.add_argument("--reserved-monthly", type=_usd, help="USD per month for a reserved GPU (default: hourly x 730)")
    c.add_argument("--owned-price", type=_usd, help="add an owned workstation with this card: purchase price, USD")
    c.add_argument("--owned-months", type=int, default=36, help="amortisation months (default 36)")
    c.add_argument(
        "--owned-utilisation",
        type=Decimal,
        default=Decimal("0.5"),
        help="share of hours busy, for its per-image rate (default 0.5)",
    )
    c.add_argument("--owned-watts", type=Decimal, default=Decimal("450"), help="draw while busy (default 450 W)")
    c.add_argument("--usd-per-kwh", type=Decimal, default=Decimal("0.15"), help="electricity (default 0.15)")
    c.add_argument("--volumes", type=_volumes, help="edits per month, comma-separated (default 1k,10k,50k,100k,1M)")
    c.add_argument("--manifest", type=Path, help="job mix for the per-policy cost (default examples/all.jsonl)")
    c.add_argument("--policy", type=Path, action="append", help="policy file(s) (default: configs/policies/*.yaml)")
    c.add_argument(
        "--shift-after-usd",
        type=_usd,
        default=Decimal(300),
        help="also cost each volume-shift policy shifting after this monthly API spend (default 300)",
    )
    c.add_argument(
        "--acceptance",
        type=_acceptance,
        action="append",
        metavar="NAME=RATE",
        help="share of edits people accept on a backend (a model id or sdxl; e.g. gpt-image-1=0.95 sdxl=0.6, "
        "from `editroute review --export`): adds the cost per accepted edit, re-runs included",
    )
    c.add_argument(
        "--firefly-operation-usd",
        type=_usd,
        help="your Adobe contract's USD per Firefly operation (default: prices.yaml's placeholder, labelled so)",
    )
    c.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    c.set_defaults(func=run_cost)

    o = bench.add_parser("overhead", help="pipeline overhead per job, peak memory, rate-limited throughput")
    o.add_argument(
        "--jobs",
        type=int,
        action="append",
        help="jobs through the zero-latency backend; repeat for several sizes (default 10000)",
    )
    o.add_argument("--api-jobs", type=int, default=500, help="jobs against the loopback API server (0: skip)")
    o.add_argument("--rpm", type=int, default=600, help="rate limit of the loopback API server, requests/minute")
    o.add_argument("--latency", default="1.0,2.0", help="simulated API latency range in seconds (default 1.0,2.0)")
    o.add_argument("--inject-429", type=float, default=0.05, help="share of API requests answered with a 429")
    o.add_argument("--out", type=Path, help="also write the figures as JSON here")
    o.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the same-run baseline (each size again with a folder fsync per file, as before)",
    )
    o.set_defaults(func=run_overhead)


def run_cost(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from rich.console import Console
    from rich.table import Table

    from backends.pricing import OwnedHardware
    from pipeline.bench import VOLUMES, CostOptions, build_policy_mix, build_report, headline, usd, write_all

    owned = None
    if args.owned_price is not None:
        try:
            owned = OwnedHardware(
                price_usd=args.owned_price,
                amortisation_months=args.owned_months,
                utilisation=args.owned_utilisation,
                watts=args.owned_watts,
                usd_per_kwh=args.usd_per_kwh,
            )
        except ValidationError as exc:
            raise ConfigError(f"owned workstation: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    options = CostOptions(
        gpu=args.gpu,
        seconds_per_image=args.seconds_per_image,
        gpu_hourly=args.gpu_hourly,
        reserved_monthly=args.reserved_monthly,
        owned=owned,
        volumes=args.volumes or VOLUMES,
        manifest=args.manifest,
        policies=tuple(args.policy) if args.policy else None,
        shift_after_usd=args.shift_after_usd,
        acceptance=dict(args.acceptance or ()),
        firefly_operation_usd=args.firefly_operation_usd,
    )
    report = build_report(options)
    report.policy_mix = build_policy_mix(options)
    written = write_all(report, args.out, plots=not args.no_plots)

    console = Console()
    table = Table(title="100,000 high-quality 1024x1024 edits a month")
    table.add_column("backend")
    table.add_column("USD / month", justify="right")
    for name, value in headline(report).items():
        table.add_row(name, usd(value))
    console.print(table)
    if report.per_accepted:
        accepted = Table(title="cost per accepted edit, 1024x1024 (re-runs until accepted included)")
        for col in ("backend", "tier", "per image", "accepted", "per accepted edit"):
            accepted.add_column(col, justify="left" if col in ("backend", "tier") else "right")
        for a in report.per_accepted:
            accepted.add_row(
                a.row.backend if a.row.scenario == "API" else f"{a.row.backend} on {report.figure.card}, per GPU-s",
                a.row.tier,
                usd(a.row.total_usd, True),
                f"{a.acceptance:.0%}",
                usd(a.usd, True),
            )
        console.print(accepted)
    console.print(f"SDXL speed: {report.figure.label}")
    console.print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_overhead(args: argparse.Namespace) -> int:
    from pipeline.bench import overhead_main

    argv = [a for n in args.jobs or [10_000] for a in ("--jobs", str(n))]
    argv += [
        "--api-jobs",
        str(args.api_jobs),
        "--rpm",
        str(args.rpm),
        "--latency",
        args.latency,
        "--inject-429",
        str(args.inject_429),
    ]
    if args.out:
        argv += ["--out", str(args.out)]
    if args.no_baseline:
        argv.append("--no-baseline")
    return overhead_main(argv)
