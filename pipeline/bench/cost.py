"""Cost model over volume: what an edit costs on each backend, per month, and when self-hosting pays off.

Every price comes from `configs/prices.yaml` through `backends.pricing` (token tables, GPU rates, `GpuCost`); every
SDXL time from `pipeline.bench.gpu_figures` (flag, RESULTS.md measurement or a published figure, always labelled).

A backend at one tier and size is a `Plan`: a fixed monthly cost per unit of capacity, a variable cost per image
and the images one unit serves per month. The API and per-second GPU rental have no fixed part; a GPU held all
month (reserved) or an owned workstation has one. monthly(V) = ceil(V / capacity) x fixed + V x per_image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from backends.pricing import (
    HOURS_PER_MONTH,
    TOKEN_SIZES,
    GpuCost,
    OwnedHardware,
    PriceTable,
    estimate_text_tokens,
    input_image_tokens,
    load_prices,
    output_tokens,
    token_cost,
)
from pipeline.bench import gpu_figures
from pipeline.bench.gpu_figures import SecondsFigure, Tier

VOLUMES = (1_000, 10_000, 50_000, 100_000, 1_000_000)
# The seed guide's model, shut down 2026-10-23: kept as the dated historical baseline row beside the live models.
BASELINE_MODEL = "gpt-image-1"
TIERS = ("low", "medium", "high")
REFERENCE_SIZE = "1024x1024"
# The seed guide's e-commerce prompt: the text tokens of a typical edit (a few tenths of a cent at most).
REFERENCE_PROMPT = (
    "Replace the background with a flat white studio surface, add a subtle drop shadow beneath the product."
)
SECONDS_PER_MONTH = float(HOURS_PER_MONTH) * 3600
BATCH = "Batch API (results within 24h)"  # the scenario of a model's Batch rows (prices.yaml `batch:`)


@dataclass(frozen=True)
class PerImage:
    backend: str  # model id, or "sdxl"
    scenario: str  # "API", or how the GPU is paid for
    tier: str
    size: str
    output_usd: Decimal  # API: output image tokens; SDXL: GPU time
    input_usd: Decimal  # API: one 1024x1024 input at low fidelity + the reference prompt; SDXL: 0
    seconds: float | None
    basis: str

    @property
    def total_usd(self) -> Decimal:
        return self.output_usd + self.input_usd


@dataclass(frozen=True)
class Plan:
    name: str
    tier: str
    per_image: Decimal
    fixed_monthly: Decimal = Decimal(0)  # per unit of capacity
    capacity: int | None = None  # images per unit per month; None: unbounded
    note: str = ""

    def units(self, volume: int) -> int:
        if self.capacity is None:
            return 1 if self.fixed_monthly else 0
        return max(1, math.ceil(volume / self.capacity))

    def monthly(self, volume: int) -> Decimal:
        return self.units(volume) * self.fixed_monthly + volume * self.per_image


def break_even(api: Plan, self_hosted: Plan) -> int | None:
    """Monthly volume from which `self_hosted` is cheaper than `api`; None if it never is.

    Below one unit's capacity the crossing is fixed / (api - variable); if that lies beyond the capacity, each
    further unit adds the same fixed cost for the same images, so it never crosses.
    """
    margin = api.per_image - self_hosted.per_image
    if margin <= 0:
        return None
    if not self_hosted.fixed_monthly:
        return 0
    volume = math.ceil(self_hosted.fixed_monthly / margin)
    if self_hosted.capacity is not None and volume > self_hosted.capacity:
        return None
    return volume


@dataclass(frozen=True)
class CostOptions:
    gpu: str | None = None
    seconds_per_image: float | None = None
    gpu_hourly: Decimal | None = None
    reserved_monthly: Decimal | None = None  # default: the hourly rate x 730 h
    owned: OwnedHardware | None = None
    volumes: tuple[int, ...] = VOLUMES
    results_path: Path = gpu_figures.RESULTS_FILE
    manifest: Path | None = None  # job mix for the policy section (default: examples/all.jsonl)
    policies: tuple[Path, ...] | None = None  # default: configs/policies/*.yaml
    shift_after_usd: Decimal | None = Decimal(300)  # also cost volume-shift policies with this API allowance
    # share of edits people accept, per backend row name (a model id, or "sdxl"): from `editroute review`
    acceptance: dict[str, float] = field(default_factory=dict)
    firefly_operation_usd: Decimal | None = None  # the contract's rate (default: prices.yaml's placeholder)


@dataclass
class CostReport:
    figure: SecondsFigure
    rate: GpuCost
    rate_label: str
    per_image: list[PerImage]
    plans: dict[str, list[Plan]]  # tier -> plans at 1024x1024
    break_evens: list[tuple[str, str, str, int | None]]  # (tier, api plan, self-hosted plan, volume)
    volumes: tuple[int, ...]
    tiers: dict[str, Tier]
    prices_as_of: str
    gpu_as_of: str
    policy_mix: object | None = None  # pipeline.bench.policy_mix.PolicyMix
    notes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # model id -> how tables name it (retired, ESTIMATE)
    per_accepted: list[PerAccepted] = field(default_factory=list)


@dataclass(frozen=True)
class PerAccepted:
    """What a USABLE edit costs: each edit is re-run until one is accepted, so on average 1 / acceptance runs
    (a geometric number of tries), each at the per-image cost. People's time judging the rejects is not in it."""

    row: PerImage
    acceptance: float

    @property
    def runs(self) -> float:
        return 1 / self.acceptance

    @property
    def usd(self) -> Decimal:
        return cost_per_accepted(self.row.total_usd, self.acceptance)


def cost_per_accepted(per_image: Decimal, acceptance: float) -> Decimal:
    """per image / acceptance: $0.21 at 95% accepted is $0.2211 per usable image; $0.004 at 60% is $0.0067."""
    if not 0 < acceptance <= 1:
        raise ValueError(f"acceptance: expected a share in (0, 1] (got {acceptance})")
    return per_image / Decimal(str(acceptance))


def sdxl_tiers() -> dict[str, Tier]:
    """The SDXL backend's own tier settings (`backends.diffusion.SDXL_TIERS`)."""
    from backends.diffusion import SDXL_TIERS  # pydantic only: no torch at import

    return {name: Tier(int(spec.steps), bool(spec.guided)) for name, spec in SDXL_TIERS.items()}


def bench_models(prices: PriceTable) -> list[str]:
    """The live models (not their dated snapshots, which price the same), then the retired baseline."""
    live = [k for k, m in prices.models.items() if m.status != "retired" and m.snapshot_of is None]
    return live + ([BASELINE_MODEL] if BASELINE_MODEL in prices.models else [])


def model_label(prices: PriceTable, model: str) -> str:
    """The model id, marked when it is retired (a dated historical row) or its token table is an estimate."""
    m = prices.model(model)
    if m.status == "retired":
        return f"{model} (retired {m.shutdown}; historical baseline, {m.as_of} prices)"
    return f"{model} (ESTIMATE)" if m.output_tokens_estimate else model


def api_per_image(prices: PriceTable, model: str, tier: str, size: str, *, batch: bool = False) -> PerImage:
    """One image on the model's synchronous API, or (`batch`) at its Batch API rates."""
    mp = prices.model(model)
    rates = mp.batch if batch and mp.batch is not None else mp
    out_tokens = output_tokens(mp, tier, size)
    rule = mp.input_image_tokens or prices.input_image_tokens
    in_image = input_image_tokens(1024, 1024, high_fidelity=False, rule=rule)
    in_text = estimate_text_tokens(REFERENCE_PROMPT)
    out_usd = token_cost(rates, text_in=0, image_in=0, image_out=out_tokens)
    in_usd = token_cost(rates, text_in=in_text, image_in=in_image, image_out=0)
    inferred = batch and not getattr(rates, "verified", True)
    basis = (
        f"{'ESTIMATE: ' if mp.output_tokens_estimate else ''}{out_tokens} out x ${rates.image_out}/1M + "
        f"({in_image} image + {in_text} text) in x ${rates.image_in}/${rates.text_in}/1M"
        + (" (Batch rates inferred: 50% of the synchronous ones)" if inferred else "")
    )
    return PerImage(model, BATCH if batch else "API", tier, size, out_usd, in_usd, None, basis)


def sdxl_per_image(
    figure: SecondsFigure,
    rate: GpuCost,
    scenario: str,
    tier_name: str,
    tier: Tier,
    size: str,
    prices: PriceTable,
    reference: Tier,
) -> PerImage:
    seconds = gpu_figures.seconds_for(figure, tier, size, reference)
    usd = Decimal(str(round(seconds, 6))) * rate.usd_per_second(prices)
    return PerImage(
        "sdxl", scenario, tier_name, size, usd, Decimal(0), seconds, f"{seconds:.2f} s x {rate.describe(prices)}"
    )


def _rate(options: CostOptions, card: str, prices: PriceTable) -> GpuCost:
    from pipeline.errors import ConfigError

    if options.gpu_hourly is not None:
        return GpuCost(hourly_usd=options.gpu_hourly)
    try:
        prices.gpu_rate(card)
    except KeyError as exc:
        raise ConfigError(f"{exc.args[0]}; pass --gpu-hourly USD or add it to configs/prices.yaml") from None
    return GpuCost(gpu=card)


def build_report(options: CostOptions, prices: PriceTable | None = None) -> CostReport:
    prices = prices or load_prices()
    figure = gpu_figures.resolve(options.gpu, options.seconds_per_image, options.results_path)
    rate = _rate(options, figure.card, prices)
    tiers = sdxl_tiers()
    ref = tiers["high"]
    hourly = rate.usd_per_hour(prices)
    rental = f"{figure.card} rented per second, {rate.describe(prices)}"
    rows: list[PerImage] = []
    for model in bench_models(prices):
        rows += [api_per_image(prices, model, t, s) for t in TIERS for s in TOKEN_SIZES]
    from pipeline.bench.hosted_rows import firefly_rows, gemini_rows  # (they build on this module's PerImage)

    rows += gemini_rows(prices, TIERS, TOKEN_SIZES)
    ff_rows, ff_label = firefly_rows(prices, TIERS, TOKEN_SIZES, options.firefly_operation_usd)
    rows += ff_rows
    for model in bench_models(prices):  # the same models through the Batch API (jobs that can wait a day)
        if prices.model(model).batch is not None and prices.model(model).status != "retired":
            rows += [api_per_image(prices, model, t, s, batch=True) for t in TIERS for s in TOKEN_SIZES]
    rows += [sdxl_per_image(figure, rate, rental, t, tiers[t], s, prices, ref) for t in TIERS for s in TOKEN_SIZES]
    for alt in gpu_figures.published_alternatives(figure):
        try:
            alt_rate = GpuCost(gpu=alt.card)
            alt_rate.usd_per_hour(prices)
        except KeyError:
            continue
        scenario = f"{alt.card} rented per second, {alt_rate.describe(prices)} ({alt.detail.split(';')[0]})"
        rows += [sdxl_per_image(alt, alt_rate, scenario, t, tiers[t], REFERENCE_SIZE, prices, ref) for t in TIERS]

    reserved_monthly = options.reserved_monthly or (hourly * HOURS_PER_MONTH).quantize(Decimal("0.01"))
    reserved_note = f"{figure.card} held all month at ${reserved_monthly}/month"
    if not options.reserved_monthly:
        reserved_note += f" (730 h x ${hourly}/h on-demand; reserved deals are lower)"
    plans: dict[str, list[Plan]] = {}
    break_evens: list[tuple[str, str, str, int | None]] = []
    for t in TIERS:
        tier_plans = [
            Plan(r.backend if r.scenario == "API" else f"{r.backend} via the Batch API", t, r.total_usd)
            for r in rows
            if r.scenario in ("API", BATCH) and r.tier == t and r.size == REFERENCE_SIZE
        ]
        seconds = gpu_figures.seconds_for(figure, tiers[t], REFERENCE_SIZE, ref)
        capacity = int(SECONDS_PER_MONTH / seconds)
        sdxl_rental = next(r for r in rows if r.scenario == rental and r.tier == t and r.size == REFERENCE_SIZE)
        self_plans = [
            Plan("sdxl rented per second", t, sdxl_rental.total_usd, note=rental),
            Plan("sdxl reserved GPU", t, Decimal(0), reserved_monthly, capacity, reserved_note),
        ]
        if options.owned is not None:
            o = options.owned
            power = Decimal(str(seconds)) / 3600 * o.watts / 1000 * o.usd_per_kwh
            fixed = (o.price_usd / o.amortisation_months).quantize(Decimal("0.01"))
            self_plans.append(
                Plan(
                    "sdxl owned workstation",
                    t,
                    power,
                    fixed,
                    capacity,
                    f"${o.price_usd} over {o.amortisation_months} months = ${fixed}/month, "
                    f"{o.watts} W at ${o.usd_per_kwh}/kWh while busy, same card and speed",
                )
            )
        plans[t] = tier_plans + self_plans
        for api in tier_plans:
            for sp in self_plans[1:]:
                break_evens.append((t, api.name, sp.name, break_even(api, sp)))

    gpu_as_of = prices.gpu_hourly.get("as_of")
    report = CostReport(
        figure=figure,
        rate=rate,
        rate_label=rate.describe(prices),
        per_image=rows,
        plans=plans,
        break_evens=break_evens,
        volumes=options.volumes,
        tiers=tiers,
        prices_as_of=", ".join(sorted({prices.model(m).as_of for m in bench_models(prices)})),
        gpu_as_of=gpu_as_of if isinstance(gpu_as_of, str) else "?",
    )
    unknown = sorted(set(options.acceptance) - {r.backend for r in rows})
    if unknown:
        from pipeline.errors import ConfigError

        names = ", ".join(sorted({r.backend for r in rows}))
        raise ConfigError(f"--acceptance {', '.join(unknown)}: no such backend here (one of {names})")
    report.per_accepted = [
        PerAccepted(r, options.acceptance[r.backend])
        for r in rows
        if r.backend in options.acceptance and r.size == REFERENCE_SIZE and r.scenario in ("API", rental)
    ]
    steps = ", ".join(f"{k} {v.steps} steps{' CFG' if v.guidance else ''}" for k, v in tiers.items())
    report.notes.append(
        f"SDXL speed: {figure.label}. Other tiers and sizes scale by FLOPs "
        f"(UNet steps x CFG batch + VAE; tiers: {steps})."
    )
    report.notes.append(
        "API models: " + ", ".join(model_label(prices, m) for m in bench_models(prices)) + ". ESTIMATE: OpenAI "
        "publishes no output-token table for the model; its rows use gpt-image-2's official table (bills come "
        "from usage; `editroute report` shows each model's measured estimate/bill ratio)."
    )
    report.labels = {m: model_label(prices, m) for m in bench_models(prices)}
    report.labels[ff_rows[0].backend] = ff_label
    report.notes.append(f"Hosted beyond OpenAI: Gemini image models (one tier, 1K output) and {ff_label}.")
    return report


def headline(report: CostReport, volume: int = 100_000) -> dict[str, Decimal]:
    """The README's numbers: every benchmarked model at high 1024^2 (output tokens only, then with one input and
    the prompt) against self-hosted SDXL, per month at `volume`."""
    out: dict[str, Decimal] = {}
    for r in report.per_image:
        if r.scenario == "API" and r.tier == "high" and r.size == REFERENCE_SIZE:
            label = report.labels.get(r.backend, r.backend)
            out[f"{label} before input tokens"] = r.output_usd * volume
            out[f"{label} with input tokens"] = r.total_usd * volume
    for r in report.per_image:
        if r.scenario == BATCH and r.tier == "high" and r.size == REFERENCE_SIZE:
            out[f"{report.labels.get(r.backend, r.backend)} via the Batch API, with input tokens"] = (
                r.total_usd * volume
            )
    high = {p.name: p for p in report.plans["high"]}
    out.update({p.name: p.monthly(volume) for p in high.values() if p.name.startswith("sdxl")})
    return out
