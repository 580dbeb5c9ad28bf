"""`mask_inference:` settings of a self-hosted backend, for CLIPSeg or Grounding DINO + SAM (pydantic only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MASK_MODEL = "CIDAS/clipseg-rd64-refined"


class GroundedSamSettings(BaseModel):
    """`mask_inference.grounded_sam:` Grounding DINO boxes the phrase, SAM segments the boxes (grounded_sam.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: str = "IDEA-Research/grounding-dino-tiny"  # hub id or local directory
    segmenter: str = "facebook/sam-vit-base"  # hub id or local directory
    box_threshold: float = Field(default=0.3, gt=0, lt=1)  # detection score a box needs
    max_boxes: int = Field(default=3, ge=1, le=32)  # the best boxes are segmented and united


class MaskSettings(BaseModel):
    """`mask_inference:` of a self-hosted backend. Pixel sizes are at the input image's resolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = DEFAULT_MASK_MODEL  # hub id or local directory (save_pretrained layout)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (a backend passes its own device for auto)
    threshold: float = Field(default=0.4, gt=0, lt=1)  # sigmoid probability that a pixel shows the phrase
    dilate_px: int = Field(default=8, ge=0, le=128)  # grow the region so the edit covers edges and shadows
    feather_px: int = Field(default=4, ge=0, le=128)  # alpha ramp outside the region
    min_coverage: float = Field(default=0.001, ge=0, lt=1)  # a smaller match counts as "nothing matched"
    salient_phrase: str = "the main object"  # what a background edit keeps (the mask is its inverse)
    grounded_sam: GroundedSamSettings | None = None  # Grounding DINO + SAM instead of CLIPSeg (`model`)

    @model_validator(mode="after")
    def _one_model(self) -> MaskSettings:
        if self.grounded_sam is not None and "model" in self.model_fields_set:
            raise ValueError("set either `model` (CLIPSeg) or `grounded_sam` (Grounding DINO + SAM), not both")
        return self
