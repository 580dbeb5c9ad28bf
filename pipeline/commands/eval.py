"""`editroute eval SAMPLE_MANIFEST --policy FILE --out DIR`: run sample jobs on every backend and tier of a policy,
score each output (prompt adherence, preservation outside the mask, seam visibility) and write a table, a contact
sheet and a `quality:` block (`DIR/quality.yaml`) that a policy includes with `quality_file:`."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="measure each backend x tier of a policy on sample jobs; write quality.yaml", description=__doc__
    )
    p.add_argument("manifest", help="sample jobs (JSONL / YAML / JSON manifest): 20-30 representative images")
    p.add_argument("--policy", required=True, help="the policy whose backends to compare")
    p.add_argument(
        "--out",
        required=True,
        help="folder: eval.md, eval.csv, contact_sheet.png, quality.yaml, runs/, editroute.db (the eval's ledger)",
    )
    p.add_argument("--tiers", default="low,medium,high", help="comma-separated tiers to run (default all three)")
    p.add_argument(
        "--clip-model",
        default=None,
        metavar="ID",
        help="CLIP model for prompt adherence: hub id or local dir (default openai/clip-vit-large-patch14)",
    )
    p.add_argument("--clip-device", default="auto", help="torch device for the CLIP model (default auto)")
    p.add_argument("--yes", action="store_true", help="run without asking, whatever the estimate")
    p.add_argument(
        "--stand-ins",
        action="store_true",
        help="try it offline: the policy's backends pointed at local stand-ins as in `editroute demo` "
        "(loopback fake API, tiny random-weight SDXL, CLIPSeg and CLIP: the scores mean nothing)",
    )
    p.set_defaults(func=run)


def _stand_ins(args: argparse.Namespace, stack: ExitStack, err: Any) -> tuple[str, str]:
    """Start the stand-ins for this eval; the policy they run under (saved in --out) and the tiny CLIP's dir."""
    import os

    import yaml

    from backends.standins import STANDIN_VERSION, FakeOpenAIServer, build_tiny_clip
    from pipeline.commands import demo

    demo.quiet_model_libraries()
    sdxl_dir = demo.build_sdxl_standin(None)
    if sdxl_dir is None:
        raise ConfigError('--stand-ins needs torch and diffusers: pip install "editroute[sdxl]"')
    clip_dir = build_tiny_clip(demo.standin_cache_dir() / f"tiny-clip-v{STANDIN_VERSION}")
    os.environ[demo.DEMO_KEY_ENV] = demo.DEMO_KEY
    server = stack.enter_context(FakeOpenAIServer(api_key=demo.DEMO_KEY))
    err.print(
        demo.BANNER.format(url=server.base_url) + " CLIP is a tiny random-weight stand-in: the scores mean nothing."
    )
    data = demo.read_policy(Path(args.policy))
    data = demo.standin_policy(
        Path(args.policy),
        api_url=server.base_url,
        sdxl_dir=sdxl_dir,
        clipseg_dir=demo.build_clipseg_standin(data),
        data=data,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from pipeline.review import write_stand_in_marker

    write_stand_in_marker(out, "editroute eval --stand-ins: fake backends and a random-weight CLIP")
    policy_file = out / "standin-policy.yaml"
    policy_file.write_text(
        f"# {Path(args.policy).name} pointed at local stand-ins by `editroute eval --stand-ins`\n"
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return str(policy_file), str(clip_dir)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    with ExitStack() as stack:
        policy, clip_model = args.policy, args.clip_model
        if args.stand_ins:
            policy, tiny_clip = _stand_ins(args, stack, err)
            clip_model = clip_model or tiny_clip
        return _run(args, policy, clip_model, err)


def _run(args: argparse.Namespace, policy: str, clip_model: str | None, err: Any) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.eval import DEFAULT_CLIP_MODEL, ClipScorer, plan_eval, run_eval, write_report

    tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip())
    plan = plan_eval(args.manifest, policy, tiers=tiers)

    table = Table(
        title=f"eval plan: {len(plan.jobs)} job(s) x {len(plan.policy.backends)} backend(s) x "
        f"{len(tiers)} tier(s), n=1 each"
    )
    for col in ("backend", "tier", "runs", "skipped", "est. $", "est. seconds"):
        table.add_column(col, justify="right" if col not in ("backend", "tier") else "left")
    for row in plan.by_backend_tier():
        secs = f"{row['seconds']:.1f}" + (f" (+{row['unknown_time']} unknown)" if row["unknown_time"] else "")
        table.add_row(row["backend"], row["tier"], str(row["runs"]), str(row["skipped"]), f"{row['usd']:.4f}", secs)
    err.print(table)
    err.print(
        f"estimated cost of this eval: ${plan.estimated_usd:.4f}, about {plan.estimated_seconds:.0f} s of "
        f"backend time (sum of the backends' estimates); runs already done in {args.out} are reused"
    )
    for v in plan.variants:
        if v.skip:
            err.print(f"  skip {v.id}: {v.skip}")
    if not plan.runnable:
        raise ConfigError("nothing to evaluate: no backend of the policy can run any sample job")
    if plan.estimated_usd > 0 and not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"this eval would spend about ${plan.estimated_usd:.4f}; pass --yes to run it")
        if input("run it? [y/N] ").strip().lower() not in ("y", "yes"):
            err.print("not run")
            return 1

    scorer = ClipScorer(clip_model or DEFAULT_CLIP_MODEL, device=args.clip_device).load()  # fail before spend
    with err.status(f"running {len(plan.runnable)} edit(s)..."):
        result = run_eval(plan, args.out, scorer)
    files = write_report(result, args.out, stand_ins=args.stand_ins)

    out = Console(highlight=False)
    summary = Table(title="measured quality (mean over jobs; failures count 0)")
    for col in ("backend", *tiers):
        summary.add_column(col)
    for name in plan.policy.backends:
        scores = result.quality.get(name, {})
        summary.add_row(name, *(f"{scores[t]:.3f}" if t in scores else "-" for t in tiers))
    out.print(summary)
    failed = sum(s.status == "failed" for s in result.scores)
    out.print(f"spent ${result.spent:.4f} (ledger {result.ledger_path}); {failed} run(s) failed")
    for key, path in files.items():
        out.print(f"{key}: {path}")
    if args.stand_ins:
        out.print(
            f"[yellow]{files['quality']} is marked `source: stand-ins`: the scores come from fake backends, so a "
            "policy refuses to route on it. Run the eval on your real backends (without --stand-ins) to get "
            "scores to route on.[/]",
            soft_wrap=True,
        )
    else:
        out.print(
            f"use it: add `quality_file: {Path(files['quality']).resolve()}` to a policy (or a path relative "
            "to the policy file)",
            soft_wrap=True,
        )
    return 1 if failed else 0
