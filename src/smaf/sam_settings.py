"""The settings of Segment Anything (config ``sam:``): SAM's automatic mask generator, the SEPL
assignment of its masks to the seeds' classes, and the section that holds both.

Pure Python like :mod:`smaf.settings` (whose ``SECTIONS`` lists :class:`SamStageSettings`):
the workflow planner builds them when Snakemake reads the workflow; :mod:`smaf.sam` (which
needs ``segment-anything`` and numpy) uses and re-exports them. ``tests/test_settings.py``
holds the schema's ``sam:`` defaults to these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from smaf.config import FLAT, Settings
from smaf.errors import ConfigError

#: What pixels no SAM mask covers become (``sam.unclaimed``, :mod:`smaf.sam.assign`).
UNCLAIMED = ("seed", "ignore", "background")
#: The SAM architectures of the official checkpoints (``sam.model``).
SAM_MODELS = ("vit_b", "vit_l", "vit_h")
#: A field fixed by the label PNGs' convention: no config key, no param.
LABEL_CONVENTION = {"source": "labels", "params": False}


@dataclass(frozen=True)
class SamSettings:
    """Settings of SAM's automatic mask generator (config ``sam:``); defaults are SAM's own."""

    points_per_side: int = 32  # a points_per_side² grid of point prompts
    points_per_batch: int = 64  # prompts run together (memory: see estimate_peak_bytes)
    pred_iou_thresh: float = 0.88  # keep masks whose predicted IoU is above this
    stability_score_thresh: float = 0.95  # keep masks at least this stable
    stability_score_offset: float = 1.0  # logit shift of the stability score
    box_nms_thresh: float = 0.7  # box IoU above which duplicate masks are dropped
    crop_n_layers: int = 0  # extra passes on image crops (0: the whole image only)
    crop_nms_thresh: float = 0.7  # box NMS between crops
    crop_overlap_ratio: float = 512 / 1500  # overlap of neighbouring crops
    crop_n_points_downscale_factor: int = 1  # fewer points per side in deeper crop layers
    min_mask_region_area: int = 0  # remove holes / islands below this area (needs opencv)
    max_side: int | None = 1024  # downscale larger images before SAM (None: never)

    def __post_init__(self) -> None:
        positive = ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(
                    f"sam.{name} must be an integer >= 1, got {getattr(self, name)!r}"
                )
        for name in ("crop_n_layers", "min_mask_region_area"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(
                    f"sam.{name} must be an integer >= 0, got {getattr(self, name)!r}"
                )
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
                     "crop_nms_thresh", "crop_overlap_ratio"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"sam.{name} must be a number in [0, 1], got {value!r}")
        if self.max_side is not None and (not isinstance(self.max_side, int) or self.max_side < 16):
            raise ConfigError(
                f"sam.max_side must be an integer >= 16 or null, got {self.max_side!r}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SamSettings:
        """From the config's ``sam:`` mapping; keys that are not generator settings are ignored
        (``checkpoint``, ``model`` belong to the model)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``SamAutomaticMaskGenerator`` (everything but ``max_side``)."""
        d = asdict(self)
        d.pop("max_side")
        return d


@dataclass(frozen=True)
class SamRefineSettings:
    """How seeds and SAM masks combine (config ``sam.unclaimed``, ``sam.seed_cover``)."""

    unclaimed: str = "seed"  # pixels no SAM mask covers: seed | ignore | background (SEPL paper)
    seed_cover: float | None = (
        None  # also join when covering this share of a seed (SEPL imp2: 0.85)
    )
    # The seeds' background and ignore labels (the label PNGs' convention, not config keys).
    background: int = field(default=0, metadata=LABEL_CONVENTION)
    ignore: int = field(default=255, metadata=LABEL_CONVENTION)

    def __post_init__(self) -> None:
        if self.unclaimed not in UNCLAIMED:
            raise ConfigError(
                f"sam.unclaimed must be one of {', '.join(UNCLAIMED)}, got {self.unclaimed!r}"
            )
        if self.seed_cover is not None and not 0.0 < self.seed_cover <= 1.0:
            raise ConfigError(f"sam.seed_cover must be in (0, 1] or null, got {self.seed_cover!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SamRefineSettings:
        """From the config's ``sam:`` mapping (generator and model keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})


@dataclass
class SamStageSettings(Settings):
    """Segment Anything (config ``sam:``): the checkpoint, SAM's automatic mask generator
    (rule sam_masks) and how the seeds name its masks (rule sam_refine)."""

    SECTION = "sam"

    # A SAM checkpoint's path or a downloads: item's name. The rule's input, not a param: the
    # masks are keyed on its content digest (smaf.stages.sam_stage).
    checkpoint: str | None = field(default=None, metadata={"params": False})
    model: str | None = None  # vit_b | vit_l | vit_h; None = read from the state dict's shapes
    generator: SamSettings = field(default_factory=SamSettings, metadata=FLAT)
    # The SEPL assignment: rule sam_refine's part (stage_settings("sam", "refine")), so it
    # reruns no sam_masks job.
    refine: SamRefineSettings = field(
        default_factory=SamRefineSettings, metadata={**FLAT, "params": False}
    )

    def __post_init__(self) -> None:
        if self.model not in (None, *SAM_MODELS):
            raise ConfigError(
                f"sam.model must be one of {', '.join(SAM_MODELS)} or null, got {self.model!r}"
            )
