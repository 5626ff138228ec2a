"""A synthetic dataset in the exact PASCAL VOC 2012 layout, for the CPU demo and the tests.

Why it looks the way it does:

* **Classes differ in colour, texture and shape together**, with neighbouring classes sharing a
  hue family, so a classifier has to look at texture/shape (like real categories) and its class
  attention maps (CAMs) peak on the most distinctive part rather than covering the whole object.
* **Object sizes span a few % to most of the image** (log-uniform area, plus a "one huge object"
  regime), because the phenomenon SMAF builds on (paper Fig. 1) is scale-dependent: reduced
  images let the network see large objects whole, enlarged images recover small ones.
* **Cluttered background** (smooth gradient, low-frequency noise and grey distractor blobs that
  are labelled background) so "anything not flat is an object" does not work.
* **Saliency maps are degraded like a real detector's** (blurred edges, holes, missed small
  objects, false positives on salient distractors), so EPS's saliency loss has something to fix.
* Masks carry VOC's 255 "ignore" band along object boundaries; the test split has no masks.

Everything is deterministic in ``SyntheticConfig.seed``: image ``i`` of the whole set is drawn
from its own generator seeded with ``(seed, i)``, so one image can be regenerated alone.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from smaf.errors import ConfigError
from smaf.io import IGNORE_INDEX, atomic_write, save_image, save_mask, write_id_list

#: Shapes the classes are drawn from, in order (class k uses SHAPES[k % len(SHAPES)]).
SHAPES = ("disc", "box", "triangle", "star", "ring", "cross", "blob", "diamond")
#: Textures the classes are drawn from, in order (offset so shape and texture cycles differ).
#: "plain" comes last (used from 7 classes on): an untextured object reads like the smooth
#: background, and with 6 classes it made the demo's green pair nearly inseparable (measured:
#: EPS seed mIoU 0.51 with it, 0.63 with concentric rings instead).
TEXTURES = ("stripes", "checker", "dots", "rings", "waves", "grid", "plain")


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic VOC-format dataset (every field has a config.yaml key)."""

    seed: int = 0  # master seed; image i uses the generator seeded with (seed, i)
    num_classes: int = 6  # foreground classes C (labels 1..C; 0 is background)
    n_train_aug: int = 240  # images in train_aug (training of every stage)
    n_train: int = 80  # the first n_train of train_aug form "train" (seed/CRF evaluation)
    n_val: int = 60  # val images (DeepLab evaluation), disjoint from train_aug
    n_test: int = 20  # test images, written without masks (like VOC's test set)
    min_size: int = 96  # shorter image side is drawn in [min_size, max_size] px
    max_size: int = 160  # longer image side is at most max_size px
    max_classes_per_image: int = 3  # each image holds 1..max_classes_per_image classes
    max_objects_per_class: int = 3  # and 1..max_objects_per_class instances of each
    min_area: float = 0.01  # smallest object area, as a fraction of the image
    max_area: float = 0.6  # largest object area, as a fraction of the image
    large_object_prob: float = 0.25  # chance an image is one dominant object (40-75 % area)
    boundary_px: int = 1  # width of the 255 "ignore" band on each side of object boundaries
    distractors: tuple[int, int] = (2, 6)  # grey background blobs per image (min, max)
    saliency_blur: float = 2.0  # Gaussian blur sigma of the saliency map (px)
    saliency_hole_prob: float = 0.4  # chance an object gets a hole in its saliency
    saliency_miss_prob: float = 0.3  # chance a small object (<3 % area) is missed entirely
    saliency_false_pos_prob: float = 0.4  # chance a distractor is marked salient
    class_names: list[str] = field(default_factory=list)  # filled from shape/texture if empty

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= 254:
            raise ConfigError(f"synthetic: num_classes must be in 1..254, got {self.num_classes}")
        if not 0 < self.n_train <= self.n_train_aug:
            raise ConfigError(
                f"synthetic: n_train ({self.n_train}) must be in 1..n_train_aug ({self.n_train_aug})"
            )
        if not 16 <= self.min_size <= self.max_size:
            raise ConfigError(
                f"synthetic: need 16 <= min_size <= max_size, got {self.min_size}, {self.max_size}"
            )
        if not 0 < self.min_area < self.max_area < 1:
            raise ConfigError(
                f"synthetic: need 0 < min_area < max_area < 1, got {self.min_area}, {self.max_area}"
            )
        if not 1 <= self.max_classes_per_image <= self.num_classes:
            raise ConfigError("synthetic: max_classes_per_image must be in 1..num_classes")
        self.distractors = tuple(self.distractors)
        if not self.class_names:
            self.class_names = [
                default_class_name(k, self.num_classes) for k in range(self.num_classes)
            ]
        if len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"synthetic: class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )


@dataclass(frozen=True)
class ClassStyle:
    """How objects of one class look."""

    shape: str
    texture: str
    hue: float  # 0..1
    texture_freq: float  # texture period in px
    aspect: float  # typical width/height ratio of the shape


def default_class_name(k: int, num_classes: int) -> str:
    """Name of foreground class ``k`` (0-based), e.g. ``"striped_disc"``."""
    style = class_style(k, num_classes)
    return f"{style.texture}_{style.shape}"


def class_style(k: int, num_classes: int) -> ClassStyle:
    """Deterministic style of foreground class ``k`` (0-based).

    Hues come in pairs (classes 2j and 2j+1 share a hue family), so colour alone does not
    identify a class.
    """
    n_families = max(1, (num_classes + 1) // 2)
    hue = ((k // 2) / n_families + (0.04 if k % 2 else 0.0)) % 1.0
    return ClassStyle(
        shape=SHAPES[k % len(SHAPES)],
        texture=TEXTURES[(k + k // len(SHAPES)) % len(TEXTURES)],
        hue=hue,
        texture_freq=5.0 + 2.0 * (k % 3),
        aspect=(1.0, 1.5, 0.8, 1.2)[k % 4],
    )


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def _shape_mask(
    shape: str,
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Boolean mask of one shape centred at (cy, cx) with radii (ry, rx), rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx  # unit-radius coordinates
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    if shape == "disc":
        return r <= 1.0
    if shape == "box":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9)
    if shape == "triangle":
        return (v <= 0.8) & (v >= -1.0 + 1.8 * np.abs(u))
    if shape == "star":
        return r <= 0.6 + 0.4 * np.cos(5 * theta)
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "cross":
        return ((np.abs(u) <= 0.35) & (np.abs(v) <= 1.0)) | (
            (np.abs(v) <= 0.35) & (np.abs(u) <= 1.0)
        )
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "blob":
        phases = rng.random(3) * 2 * np.pi
        wobble = sum(0.12 * np.cos((i + 2) * theta + phases[i]) for i in range(3))
        return r <= 0.85 + wobble
    raise ValueError(f"unknown shape {shape!r}")


def _texture(style: ClassStyle, yy: np.ndarray, xx: np.ndarray, angle: float) -> np.ndarray:
    """Texture intensity in [0, 1] over the whole canvas (masked by the caller)."""
    f = style.texture_freq
    c, s = np.cos(angle), np.sin(angle)
    u = xx * c + yy * s
    v = -xx * s + yy * c
    if style.texture == "stripes":
        return (np.sin(2 * np.pi * u / f) > 0).astype(np.float32)
    if style.texture == "checker":
        return ((np.floor(u / f) + np.floor(v / f)) % 2).astype(np.float32)
    if style.texture == "dots":
        return (((u % f) - f / 2) ** 2 + ((v % f) - f / 2) ** 2 < (f / 3.5) ** 2).astype(np.float32)
    if style.texture == "waves":
        return 0.5 + 0.5 * np.sin(2 * np.pi * (u + 2.0 * np.sin(2 * np.pi * v / (3 * f))) / f)
    if style.texture == "rings":
        return (np.sin(2 * np.pi * np.sqrt(u * u + v * v) / f) > 0).astype(np.float32)
    if style.texture == "grid":
        return (((u % f) < 1.5) | ((v % f) < 1.5)).astype(np.float32)
    return np.zeros_like(u, dtype=np.float32)  # plain


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` px (4-connectivity steps) of a change of label: VOC's 255 band."""
    band = np.zeros(mask.shape, dtype=bool)
    if width <= 0:
        return band
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[1:, :] |= mask[:-1, :] != mask[1:, :]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:, 1:] |= mask[:, :-1] != mask[:, 1:]
    band = edge.copy()
    for _ in range(width - 1):  # grow the 1-px edge to the requested width
        grown = band.copy()
        grown[:-1, :] |= band[1:, :]
        grown[1:, :] |= band[:-1, :]
        grown[:, :-1] |= band[:, 1:]
        grown[:, 1:] |= band[:, :-1]
        band = grown
    return band


@dataclass
class Sample:
    """One generated image with its annotations."""

    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # uint8 [H, W]: 0 background, 1..C classes, 255 boundary band
    saliency: np.ndarray  # uint8 [H, W]: 0..255 degraded foreground probability
    labels: np.ndarray  # uint8 [C]: 1 where the class is in the image
    object_areas: list[float]  # area fraction of every visible object (for statistics)


def _object_areas(rng: np.random.Generator, cfg: SyntheticConfig, n: int) -> list[float]:
    """Area fractions of ``n`` objects: log-uniform in [min_area, max_area], or one dominant."""
    lo, hi = np.log(cfg.min_area), np.log(cfg.max_area)
    areas = [float(np.exp(rng.uniform(lo, hi))) for _ in range(n)]
    if rng.random() < cfg.large_object_prob:
        areas[0] = float(rng.uniform(0.4, 0.75))
        areas[1:] = [min(a, 0.08) for a in areas[1:]]  # the others stay small beside it
    return areas


def generate_sample(cfg: SyntheticConfig, index: int) -> Sample:
    """Generate image ``index`` of the dataset (deterministic in ``cfg.seed`` and ``index``)."""
    rng = np.random.default_rng([cfg.seed, index])
    C = cfg.num_classes
    # Image size: one side in [min_size, max_size], aspect in [3/4, 4/3] like VOC photos.
    short = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    long_ = int(min(cfg.max_size, round(short * rng.uniform(1.0, 4 / 3))))
    h, w = (short, long_) if rng.random() < 0.6 else (long_, short)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # Cluttered background: gradient + low-frequency noise in a desaturated colour.
    bg_h = rng.random()
    base = _hsv(bg_h, rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.75))
    grad = (yy / h * rng.uniform(-0.3, 0.3) + xx / w * rng.uniform(-0.3, 0.3))[..., None]
    noise = (_smooth_noise(rng, h, w, int(rng.integers(3, 8))) - 0.5)[..., None]
    image = base[None, None, :] * (1.0 + grad + 0.5 * noise)
    image += rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)  # sensor noise

    mask = np.zeros((h, w), dtype=np.uint8)
    distractor_masks = []
    for _ in range(int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))):
        area = rng.uniform(0.005, 0.06) * h * w
        r = np.sqrt(area / np.pi)
        dm = _shape_mask(
            "blob",
            yy,
            xx,
            rng.uniform(0, h),
            rng.uniform(0, w),
            r,
            r * rng.uniform(0.6, 1.6),
            rng.uniform(0, np.pi),
            rng,
        )
        grey = rng.uniform(40, 220)
        image[dm] = image[dm] * 0.3 + np.array([grey, grey, grey * rng.uniform(0.9, 1.1)]) * 0.7
        distractor_masks.append(dm)

    # Objects: pick 1..max_classes_per_image classes, 1..max_objects_per_class of each,
    # painted back to front in random order (later ones occlude earlier ones).
    n_cls = int(rng.integers(1, cfg.max_classes_per_image + 1))
    classes = rng.choice(C, size=n_cls, replace=False)
    objects = [
        int(k) for k in classes for _ in range(int(rng.integers(1, cfg.max_objects_per_class + 1)))
    ]
    rng.shuffle(objects)
    areas = sorted(_object_areas(rng, cfg, len(objects)), reverse=True)  # big ones behind
    for k, area_frac in zip(objects, areas, strict=True):
        style = class_style(k, C)
        aspect = style.aspect * rng.uniform(0.8, 1.25)
        area = area_frac * h * w
        ry = np.sqrt(area / (np.pi * aspect))
        rx = ry * aspect
        # Centre so that most of the object is inside the image.
        cy = rng.uniform(min(ry * 0.6, h / 2), max(h - ry * 0.6, h / 2))
        cx = rng.uniform(min(rx * 0.6, w / 2), max(w - rx * 0.6, w / 2))
        angle = rng.uniform(0, 2 * np.pi)
        om = _shape_mask(style.shape, yy, xx, cy, cx, ry, rx, angle, rng)
        if not om.any():
            continue
        colour = _hsv(
            style.hue + rng.normal(0, 0.015), rng.uniform(0.6, 0.95), rng.uniform(0.55, 0.95)
        )
        dark = colour * 0.45
        tex = _texture(style, yy - cy, xx - cx, angle + rng.normal(0, 0.3))[..., None]
        shading = 1.0 + 0.25 * ((yy - cy) / max(ry, 1) * -0.5)[..., None]  # light from above
        paint = (colour * (1 - tex) + dark * tex) * np.clip(shading, 0.7, 1.3)
        image[om] = paint[om]
        mask[om] = k + 1

    image = np.clip(image, 0, 255).astype(np.uint8)
    out_mask = mask.copy()
    out_mask[boundary_band(mask, cfg.boundary_px)] = IGNORE_INDEX
    # Labels from the annotated mask, as the field derives them (cls_labels.npy): a sliver
    # of an object lying wholly inside the ignore band is not a label.
    labels = np.zeros(C, dtype=np.uint8)
    present = np.unique(out_mask)
    labels[present[(present > 0) & (present != IGNORE_INDEX)] - 1] = 1
    if not labels.any():
        # Every object was fully occluded or off-image (very rare): a VOC image always has at
        # least one class, so regenerate with a different stream.
        return generate_sample(cfg, index + 1_000_003)

    object_areas = [
        float((mask == k + 1).mean()) for k in sorted(set(objects)) if (mask == k + 1).any()
    ]
    saliency = _degraded_saliency(rng, cfg, mask, distractor_masks)
    return Sample(image, out_mask, saliency, labels, object_areas)


def _degraded_saliency(
    rng: np.random.Generator, cfg: SyntheticConfig, mask: np.ndarray, distractors: list[np.ndarray]
) -> np.ndarray:
    """A saliency map as an off-the-shelf detector would give it (uint8 [H, W])."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sal = np.zeros((h, w), dtype=np.float32)
    for k in np.unique(mask[mask > 0]):
        obj = mask == k
        frac = obj.mean()
        if frac < 0.03 and rng.random() < cfg.saliency_miss_prob:
            continue  # small objects are often missed
        sal[obj] = rng.uniform(0.75, 1.0)
        if rng.random() < cfg.saliency_hole_prob:
            ys, xs = np.nonzero(obj)
            i = int(rng.integers(len(ys)))
            r = np.sqrt(obj.sum() / np.pi) * rng.uniform(0.2, 0.45)
            hole = (yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 <= r * r
            sal[hole & obj] *= rng.uniform(0.0, 0.3)
    for dm in distractors:
        if rng.random() < cfg.saliency_false_pos_prob:
            sal[dm] = np.maximum(sal[dm], rng.uniform(0.4, 0.9))
    img = Image.fromarray((sal * 255).astype(np.uint8))
    if cfg.saliency_blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(cfg.saliency_blur))
    return np.asarray(img, dtype=np.uint8)


def split_ids(cfg: SyntheticConfig) -> dict[str, list[str]]:
    """Image ids per split; ids look like VOC's (``"2000_000017"``), year 2000 marks synthetic."""
    n_trainval = cfg.n_train_aug + cfg.n_val
    ids = [f"2000_{i:06d}" for i in range(n_trainval + cfg.n_test)]
    train_aug = ids[: cfg.n_train_aug]
    return {
        "train_aug": train_aug,
        "train": train_aug[: cfg.n_train],
        "val": ids[cfg.n_train_aug : n_trainval],
        "test": ids[n_trainval:],
    }


def write_dataset(cfg: SyntheticConfig | dict, root: str | Path) -> dict:
    """Generate the whole dataset under ``root`` (a ``VOC2012``-like folder); return statistics.

    Writes ``JPEGImages/``, ``SegmentationClass/`` (not for test), ``SALImages/``,
    ``ImageSets/Segmentation/{train_aug,train,val,test}.txt``, ``cls_labels.csv`` (the
    project's image-level label file) and ``synthetic.json`` (config + statistics). Every file is
    written atomically; the split lists and ``synthetic.json`` come last.
    """
    from smaf.data.labels import write_labels_csv

    if isinstance(cfg, dict):
        cfg = SyntheticConfig(**cfg)
    root = Path(root)
    splits = split_ids(cfg)
    test_ids = set(splits["test"])
    all_ids = splits["train_aug"] + splits["val"] + splits["test"]
    labels: dict[str, np.ndarray] = {}
    areas: list[float] = []
    for index, image_id in enumerate(all_ids):
        s = generate_sample(cfg, index)
        save_image(root / "JPEGImages" / f"{image_id}.jpg", s.image, quality=92)
        sal_path = root / "SALImages" / f"{image_id}.png"
        with atomic_write(sal_path) as tmp:
            Image.fromarray(s.saliency, mode="L").save(tmp, format="PNG")
        if image_id not in test_ids:
            save_mask(root / "SegmentationClass" / f"{image_id}.png", s.mask)
            areas += s.object_areas
        labels[image_id] = s.labels
    write_labels_csv(root / "cls_labels.csv", labels, cfg.class_names)
    for name, ids in splits.items():
        write_id_list(root / "ImageSets" / "Segmentation" / f"{name}.txt", ids)
    a = np.asarray(areas)
    stats = {
        "images": {k: len(v) for k, v in splits.items()},
        "class_names": ["background", *cfg.class_names],
        "object_area_fraction": {
            "count": int(a.size),
            "min": float(a.min()),
            "p10": float(np.percentile(a, 10)),
            "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)),
            "max": float(a.max()),
        },
        "images_per_class": {
            n: int(sum(int(labels[i][k]) for i in splits["train_aug"]))
            for k, n in enumerate(cfg.class_names)
        },
    }
    with atomic_write(root / "synthetic.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "stats": stats}, indent=2))
    return stats
