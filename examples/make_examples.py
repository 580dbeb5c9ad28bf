"""Make the small example images, masks and manifests in examples/ (run from anywhere; deterministic).

Five use cases: e-commerce background replacement, marketing variants, multi-image compositing,
localisation of a text badge, prototyping (place an object); and hosted-mix.jsonl, work tagged for the
hosted-mix policy (legal-cleared, draft, final). Images are 64-192 px PNGs of a few KB so CPU runs
with a tiny SDXL pipeline stay fast. Masks follow OpenAI's convention: alpha 0 marks the area to edit.

    python examples/make_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"


def _save(img: Image.Image, name: str) -> str:
    IMAGES.mkdir(exist_ok=True)
    img.save(IMAGES / name, format="PNG", optimize=True)
    return f"images/{name}"


def _mask(size: tuple[int, int], box: tuple[int, int, int, int], *, edit_inside: bool) -> Image.Image:
    """RGBA mask: alpha 0 (edit) inside `box` if edit_inside, else outside it."""
    keep, edit = (0, 0, 0, 255), (0, 0, 0, 0)
    mask = Image.new("RGBA", size, keep if edit_inside else edit)
    ImageDraw.Draw(mask).rectangle(box, fill=edit if edit_inside else keep)
    return mask


def product(kind: str, colour: tuple[int, int, int]) -> tuple[Image.Image, tuple[int, int, int, int]]:
    img = Image.new("RGB", (128, 128), (150, 140, 120))  # a cluttered-ish table backdrop
    d = ImageDraw.Draw(img)
    for y in range(0, 128, 16):
        d.line((0, y, 127, y + 8), fill=(135, 125, 105))
    if kind == "mug":
        box = (36, 40, 92, 104)
        d.rectangle(box, fill=colour)
        d.arc((84, 56, 108, 84), 270, 90, fill=colour, width=6)
    elif kind == "shoe":
        box = (20, 64, 108, 100)
        d.polygon([(20, 100), (20, 72), (60, 64), (108, 88), (108, 100)], fill=colour)
    else:  # bottle
        box = (48, 16, 80, 112)
        d.rectangle((48, 40, 80, 112), fill=colour)
        d.rectangle((58, 16, 70, 40), fill=colour)
    return img, box


def banner(text: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
    img = Image.new("RGB", (192, 96), (30, 60, 120))
    d = ImageDraw.Draw(img)
    d.rectangle((8, 8, 110, 88), fill=(240, 240, 230))  # the product panel
    badge = (124, 24, 184, 72)
    d.ellipse(badge, fill=(220, 30, 40))
    d.text((138, 42), text, fill=(255, 255, 255))
    return img, badge


def scene() -> Image.Image:
    img = Image.new("RGB", (160, 128), (200, 210, 220))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 80, 159, 127), fill=(120, 90, 60))  # floor
    d.rectangle((16, 20, 60, 70), fill=(170, 200, 230))  # window
    return img


def main() -> None:
    files: dict[str, str] = {}
    for kind, colour in (("mug", (200, 40, 40)), ("shoe", (40, 90, 200)), ("bottle", (30, 150, 80))):
        img, box = product(kind, colour)
        files[kind] = _save(img, f"product_{kind}.png")
        files[f"{kind}_mask"] = _save(_mask(img.size, box, edit_inside=False), f"product_{kind}_bg_mask.png")
    ad = Image.new("RGB", (128, 128), (250, 200, 60))
    ImageDraw.Draw(ad).ellipse((24, 24, 104, 104), fill=(240, 110, 30))
    files["ad"] = _save(ad, "ad_summer.png")
    lifestyle = scene()
    files["lifestyle"] = _save(lifestyle, "lifestyle_kitchen.png")
    logo = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(logo).polygon([(32, 4), (60, 60), (4, 60)], fill=(20, 20, 20, 255))
    files["logo"] = _save(logo, "brand_logo.png")
    sale, badge = banner("SALE")
    files["banner"] = _save(sale, "banner_sale.png")
    files["badge_mask"] = _save(_mask(sale.size, badge, edit_inside=True), "banner_badge_mask.png")
    files["room"] = _save(lifestyle, "room.png")
    files["floor_mask"] = _save(_mask(lifestyle.size, (60, 60, 140, 120), edit_inside=True), "room_floor_mask.png")
    files["wall_mask"] = _save(_mask(lifestyle.size, (80, 10, 150, 60), edit_inside=True), "room_wall_mask.png")

    backdrop = "Replace the background with a clean white studio backdrop and a soft drop shadow under the product"
    manifests: dict[str, list[dict]] = {
        "ecommerce": [
            *(
                {
                    "id": f"ecom-{k}",
                    "image": files[k],
                    "mask": files[f"{k}_mask"],
                    "prompt": backdrop,
                    "quality": "medium",
                    "size": "1024x1024",
                    "tags": ["ecommerce", "product"],
                }
                for k in ("mug", "shoe", "bottle")
            ),
            {
                "id": "ecom-shoe-nomask",
                "image": files["shoe"],
                "prompt": backdrop,
                "quality": "medium",
                "tags": ["ecommerce", "product"],
            },
            {
                "id": "ecom-bottle-cutout",
                "image": files["bottle"],
                "mask": files["bottle_mask"],
                "prompt": "Cut the bottle out onto a transparent background",
                "background": "transparent",
                "quality": "medium",
                "tags": ["ecommerce", "product"],
            },
        ],
        "marketing": [
            {
                "id": "mkt-summer-6",
                "image": files["ad"],
                "n": 6,
                "quality": "low",
                "prompt": "Variations of this summer ad: beach, pool and picnic settings, bright and warm",
                "tags": ["marketing"],
            },
            {
                "id": "mkt-summer-10",
                "image": files["ad"],
                "n": 10,
                "quality": "medium",
                "seed": 7,
                "prompt": "Ten colourway variants of this ad for A/B testing",
                "tags": ["marketing"],
            },
        ],
        "compositing": [
            {
                "id": "comp-kitchen-3",
                "images": [files["bottle"], files["lifestyle"], files["logo"]],
                "prompt": "Place the bottle from image 1 on the kitchen counter of image 2, with the brand mark "
                "from image 3 on its label",
                "quality": "high",  # gpt-image-2.x reads every input at high fidelity: no input_fidelity
                "tags": ["composite", "brand"],
            },
            {
                "id": "comp-kitchen-4",
                "images": [files["mug"], files["shoe"], files["lifestyle"], files["logo"]],
                "prompt": "A lifestyle shot with the mug and the shoe from images 1-2 in the room of image 3, "
                "brand logo from image 4 in the corner",
                "quality": "medium",
                "tags": ["composite"],
            },
        ],
        "localisation": [
            {
                "id": "loc-sale-fr",
                "image": files["banner"],
                "mask": files["badge_mask"],
                "prompt": "Replace the badge text 'SALE' with the French word 'SOLDES', same font and colours",
                "quality": "high",
                "tags": ["localisation", "text"],
            },
            {
                "id": "loc-sale-de",
                "image": files["banner"],
                "mask": files["badge_mask"],
                "prompt": "Replace the badge text 'SALE' with the German word 'RABATT', same font and colours",
                "quality": "high",
                "tags": ["localisation", "text"],
            },
            {  # not needed before tomorrow: a policy may send it to a batch lane (half price, within 24 h)
                "id": "loc-sale-it",
                "image": files["banner"],
                "mask": files["badge_mask"],
                "prompt": "Replace the badge text 'SALE' with the Italian word 'SALDI', same font and colours",
                "quality": "high",
                "tags": ["localisation", "text"],
                "deadline": "24h",
            },
            {
                "id": "loc-logo-jp",
                "image": files["banner"],
                "mask": files["badge_mask"],
                "prompt": "Swap the red badge for the Japanese market logo, keep the layout",
                "quality": "medium",
                "tags": ["localisation", "logo"],
            },
        ],
        "prototyping": [
            {
                "id": "proto-armchair",
                "image": files["room"],
                "mask": files["floor_mask"],
                "prompt": "Place a red velvet armchair on the floor",
                "quality": "low",
                "seed": 1,
                "tags": ["prototype"],
            },
            {
                "id": "proto-lamp",
                "image": files["room"],
                "mask": files["floor_mask"],
                "prompt": "Place a tall brass floor lamp here",
                "quality": "low",
                "seed": 2,
                "tags": ["prototype"],
            },
            {
                "id": "proto-painting",
                "image": files["room"],
                "mask": files["wall_mask"],
                "prompt": "Hang an abstract blue painting on the wall",
                "quality": "medium",
                "n": 2,
                "seed": 3,
                "tags": ["prototype"],
            },
        ],
    }
    for name, jobs in manifests.items():
        if name == "compositing":  # one YAML manifest, to show the format
            lines = ["# Multi-image compositing: several inputs per job (paths relative to this file).", "jobs:"]
            lines += ["  - " + json.dumps(job) for job in jobs]
            (HERE / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        else:
            (HERE / f"{name}.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs), encoding="utf-8")
    everything = [job for jobs in manifests.values() for job in jobs]
    (HERE / "all.jsonl").write_text("".join(json.dumps(j) + "\n" for j in everything), encoding="utf-8")
    hosted = hosted_mix(files)  # for configs/policies/hosted-mix.yaml; not part of all.jsonl
    (HERE / "hosted-mix.jsonl").write_text("".join(json.dumps(j) + "\n" for j in hosted), encoding="utf-8")
    print(
        f"wrote {len(list(IMAGES.glob('*.png')))} images and {len(manifests) + 2} manifests "
        f"({len(everything)} jobs in all.jsonl) to {HERE}"
    )


def hosted_mix(files: dict[str, str]) -> list[dict]:
    """Work tagged for configs/policies/hosted-mix.yaml: `legal-cleared` (Firefly: commercially cleared training
    data), `draft` (Gemini: the cheapest hosted edit), and final work (OpenAI)."""
    return [
        {
            "id": "legal-mug-bg",
            "image": files["mug"],
            "mask": files["mug_mask"],
            "prompt": "Replace the background with a clean white studio backdrop for the catalogue",
            "tags": ["legal-cleared", "product"],
        },
        {
            "id": "legal-banner-autumn",
            "image": files["banner"],
            "prompt": "Recolour the campaign banner in warm autumn tones",
            "tags": ["legal-cleared", "campaign"],
        },
        {
            "id": "legal-draft-shoe",
            "image": files["shoe"],
            "mask": files["shoe_mask"],
            "prompt": "Put the shoe on a wet city street at night",
            "quality": "low",
            "tags": ["legal-cleared", "draft"],
        },
        {
            "id": "draft-armchair",
            "image": files["room"],
            "mask": files["floor_mask"],
            "prompt": "Place a red velvet armchair on the floor",
            "quality": "low",
            "tags": ["draft"],
        },
        {
            "id": "draft-summer-3",
            "image": files["ad"],
            "n": 3,
            "quality": "low",
            "prompt": "Three quick variations of this summer ad: beach, pool and picnic",
            "tags": ["draft"],
        },
        {
            "id": "draft-kitchen",
            "images": [files["bottle"], files["lifestyle"]],
            "prompt": "Place the bottle from image 1 on the kitchen counter of image 2",
            "quality": "low",
            "tags": ["draft"],
        },
        {
            "id": "final-sale-fr",
            "image": files["banner"],
            "mask": files["badge_mask"],
            "prompt": "Replace the badge text 'SALE' with the French word 'SOLDES', same font and colours",
            "quality": "high",
            "tags": ["localisation", "text"],
        },
    ]


if __name__ == "__main__":
    main()
