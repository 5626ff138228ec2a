"""The report's figures as matplotlib figures: grids of images, attention and label maps.

Every builder returns a :class:`matplotlib.figure.Figure` made without pyplot (no global state,
no GUI backend: :func:`save_figure` renders through Agg), so the figures can be inspected
(axes, images, colour maps) by tests and saved by the figure rules.

* attention maps are drawn over their image in the ``jet`` colour map, 0..1, with a colour bar;
* label maps (ground truth, seeds, pseudo labels, predictions) in the VOC palette, with a legend
  of the classes that occur (255 = ignore, the cream band along object boundaries).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch

from smaf.io import IGNORE_INDEX, PathLike, atomic_write, voc_palette
from smaf.report.samples import Sample

#: Colour map of every attention map (the usual CAM colouring: blue 0 → red 1).
HEAT_CMAP = "jet"
#: Opacity of the heat map over its image.
HEAT_ALPHA = 0.5
#: Size of one grid cell (inches; 100 dpi → 190 px).
TILE_IN = 1.9
DPI = 100

_PALETTE = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


# ------------------------------------------------------------------------------ primitives
def colorize(mask: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` label map → uint8 ``[H, W, 3]`` in the VOC palette (255 = cream)."""
    return _PALETTE[np.asarray(mask, dtype=np.uint8)]


def class_name(class_names: Sequence[str], cls: int) -> str:
    """Name of label value ``cls`` (``'ignore'`` for 255)."""
    if cls == IGNORE_INDEX:
        return "ignore"
    return class_names[cls] if 0 <= cls < len(class_names) else f"class {cls}"


def image_grid(
    n_rows: int,
    n_cols: int,
    *,
    title: str,
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    tile: float = TILE_IN,
    aspect: float = 1.0,
    bottom: float = 0.0,
) -> tuple[Figure, np.ndarray]:
    """A figure of ``n_rows × n_cols`` image cells (no ticks) with titles.

    ``col_titles`` go above the first row, ``row_titles`` left of the first column (wrapped);
    cells are ``tile`` inches wide and ``aspect × tile`` high (height / width of the images);
    ``bottom`` inches are added below for a colour bar or legend.

    Returns:
        The figure and its axes, an ``[n_rows, n_cols]`` object array.
    """
    label_w = 1.5 if row_titles else 0.0
    fig = Figure(
        figsize=(n_cols * tile + label_w, n_rows * tile * aspect + 0.7 + bottom),
        dpi=DPI,
        layout="constrained",
    )
    fig.suptitle(title, fontsize=12, fontweight="bold")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for ax, text in zip(axes[0], col_titles, strict=False):
        ax.set_title(textwrap.fill(text, 24), fontsize=9)
    for ax, text in zip(axes[:, 0], row_titles, strict=False):
        lines = [textwrap.fill(line, 20) for line in str(text).split("\n")]
        ax.set_ylabel("\n".join(lines), rotation=0, ha="right", va="center", fontsize=8)
    return fig, axes


def show_image(ax: Axes, image: np.ndarray) -> None:
    """An RGB image (uint8 ``[H, W, 3]``) in the cell."""
    ax.imshow(image, interpolation="bilinear")


def show_heat(ax: Axes, image: np.ndarray, heat: np.ndarray) -> AxesImage:
    """``heat`` (``[H, W]`` in [0, 1]) in :data:`HEAT_CMAP` over ``image``; returns the overlay."""
    ax.imshow(image, interpolation="bilinear")
    return ax.imshow(
        np.asarray(heat, dtype=np.float32),
        cmap=matplotlib.colormaps[HEAT_CMAP],
        norm=Normalize(0.0, 1.0),
        alpha=HEAT_ALPHA,
        interpolation="bilinear",
    )


def show_labels(ax: Axes, mask: np.ndarray | None) -> set[int]:
    """A label map in the VOC palette (nearest neighbour: no blended colours); returns its
    label values. ``None`` draws a grey "missing" cell."""
    if mask is None:
        show_missing(ax)
        return set()
    ax.imshow(colorize(mask), interpolation="nearest")
    return {int(v) for v in np.unique(mask)}


def show_missing(ax: Axes, text: str = "missing") -> None:
    """A grey cell with ``text``: an input the figure expected and did not find."""
    ax.set_facecolor("#d0d0d0")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9)


def add_colorbar(fig: Figure, axes: np.ndarray, label: str = "attention") -> None:
    """A horizontal 0..1 colour bar of :data:`HEAT_CMAP` under ``axes``, about two cells wide."""
    mappable = ScalarMappable(Normalize(0.0, 1.0), matplotlib.colormaps[HEAT_CMAP])
    shrink = min(0.9, 2.0 / axes.shape[1])
    fig.colorbar(
        mappable,
        ax=axes,
        location="bottom",
        shrink=shrink,
        aspect=40 * shrink / 0.35,
        pad=0.02,
        label=label,
    )


def add_class_legend(fig: Figure, class_names: Sequence[str], classes: Iterable[int]) -> None:
    """A legend of colour patches (VOC palette) and names of the label values ``classes``."""
    values = sorted({int(c) for c in classes})
    handles = [
        Patch(
            facecolor=_PALETTE[c] / 255.0,
            edgecolor="black",
            linewidth=0.5,
            label=f"{c}: {class_name(class_names, c)}",
        )
        for c in values
    ]
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(len(handles), 6),
            fontsize=8,
            frameon=False,
        )


def cell_aspect(images: Sequence[np.ndarray]) -> float:
    """Height / width of grid cells for ``images`` (``[H, W, ...]``): their median, in [0.5, 2]."""
    ratios = [im.shape[0] / im.shape[1] for im in images] or [1.0]
    return float(np.clip(np.median(ratios), 0.5, 2.0))


def save_figure(fig: Figure, path: PathLike) -> None:
    """Render ``fig`` to ``path`` (format from the suffix: .png, .svg, ...), atomically."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=DPI, facecolor="white")


# ---------------------------------------------------------------------------- the figures
def _gt(ax: Axes, sample: Sample) -> None:
    if sample.mask is None:
        show_missing(ax, "no ground truth")
    else:
        show_labels(ax, sample.mask)


def _sample_grid(
    samples: Sequence[Sample],
    shape: tuple[int, int],
    title: str,
    col_titles: Sequence[str],
    row_titles: Sequence[str],
) -> tuple[Figure, np.ndarray]:
    """The grid of Fig. 1, 3 and 4: ``shape`` (rows, columns) cells sized for the samples'
    images, with room below for the colour bar."""
    return image_grid(
        *shape,
        title=title,
        col_titles=list(col_titles),
        row_titles=list(row_titles),
        aspect=cell_aspect([s.image for s in samples]),
        bottom=0.5,
    )


def _sample_rows(
    samples: Sequence[Sample], cols: Sequence[str], class_names: Sequence[str], title: str
) -> tuple[Figure, np.ndarray]:
    """Fig. 1 and Fig. 4: a row per sample (titled with its id, class and note)."""
    rows = [_row_title(s, class_names) for s in samples]
    return _sample_grid(samples, (len(samples), len(cols)), title, cols, rows)


def scale_attention_figure(
    samples: Sequence[Sample],
    per_scale: Sequence[np.ndarray],
    fused: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    scales: Sequence[float],
) -> Figure:
    """Fig. 1: one row per sample: image, GT, the class's attention at each scale, fused.

    ``per_scale[i]`` is ``[S, C, H, W]`` and ``fused[i]`` ``[C, H, W]`` of ``samples[i]``
    (:func:`smaf.cam.class_maps_per_scale`).
    """
    cols = ["image", "ground truth", *[f"scale ×{g:g}" for g in scales], "fused (Eq. 5-6)"]
    title = "Fig. 1. Class attention of the EPS model at each scale, and fused"
    fig, axes = _sample_rows(samples, cols, class_names, title)
    for row, s, per, fu in zip(axes, samples, per_scale, fused, strict=True):
        c = s.cls - 1
        show_image(row[0], s.image)
        _gt(row[1], s)
        for ax, m in zip(row[2:], [*per, fu], strict=True):
            show_heat(ax, s.image, m[c])
    add_colorbar(fig, axes)
    return fig


def eps_smaf_figure(
    samples: Sequence[Sample],
    eps: Sequence[np.ndarray],
    smaf: Sequence[np.ndarray],
    class_names: Sequence[str],
    base: str = "EPS",
) -> Figure:
    """Fig. 3: one column per sample; rows image, GT, the base's fused map, SMAF fused map.

    ``eps[i]`` / ``smaf[i]``: fused maps ``[C, H, W]`` of ``samples[i]`` (the base's: EPS, CAM
    or CLIP, named ``base``); each column shows the channel of its sample's class.
    """
    name = ", ".join(dict.fromkeys(class_name(class_names, s.cls) for s in samples))
    title = f"Fig. 3. Fused attention of '{name}': {base} vs SMAF"
    rows = ["image", "ground truth", f"{base}: {name}", f"SMAF: {name}"]
    fig, axes = _sample_grid(samples, (4, len(samples)), title, [s.image_id for s in samples], rows)
    for col, s, e, m in zip(axes.T, samples, eps, smaf, strict=True):
        show_image(col[0], s.image)
        _gt(col[1], s)
        show_heat(col[2], s.image, e[s.cls - 1])
        show_heat(col[3], s.image, m[s.cls - 1])
    add_colorbar(fig, axes)
    return fig


def reactivation_figure(
    samples: Sequence[Sample],
    single: Sequence[np.ndarray],
    fused: Sequence[np.ndarray],
    reactivated: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    thr: float = 0.2,
    student: Sequence[np.ndarray] | None = None,
) -> Figure:
    """Fig. 4: per sample, the teacher's single-scale map, its fused map F, the reactivated
    target F' (Eq. 8 of F at ``thr``) and, if given, the student's single-scale output.

    ``single[i]``, ``fused[i]``, ``student[i]``: ``[C, H, W]`` maps of ``samples[i]``;
    ``reactivated[i]``: its ``[C+1, H, W]`` target, background first
    (:func:`smaf.fusion.reactivate`).
    """
    cols = [
        "image",
        "ground truth",
        "EPS ×1 (single scale)",
        "fused F (w/o reactivation)",
        f"reactivated F′ (thr {thr:g})",
    ]
    if student is not None:
        cols.append("SMAF student ×1")
    title = "Fig. 4. Single-scale vs fused attention, and the reactivated target"
    fig, axes = _sample_rows(samples, cols, class_names, title)
    for i, (row, s) in enumerate(zip(axes, samples, strict=True)):
        c = s.cls - 1
        show_image(row[0], s.image)
        _gt(row[1], s)
        show_heat(row[2], s.image, single[i][c])
        show_heat(row[3], s.image, fused[i][c])
        show_heat(row[4], s.image, reactivated[i][c + 1])  # background first
        if student is not None:
            show_heat(row[5], s.image, student[i][c])
    add_colorbar(fig, axes)
    return fig


def label_figure(
    rows: Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray | None]]],
    class_names: Sequence[str],
    *,
    title: str,
) -> Figure:
    """Fig. 5: one row per image: the image, then each label map (GT, seeds, predictions).

    Args:
        rows: ``(image id, uint8 [H, W, 3] image, {column title: [H, W] label map or None})``;
            every row has the same column titles; None is a grey "missing" cell.
        class_names: C+1 names (legend of the label values that occur).
        title: the figure's title.
    """
    cols = ["image", *(rows[0][2] if rows else ())]
    fig, axes = image_grid(
        len(rows),
        len(cols),
        title=title,
        col_titles=cols,
        row_titles=[r[0] for r in rows],
        aspect=cell_aspect([r[1] for r in rows]),
        bottom=0.5,
    )
    seen: set[int] = set()
    for ax_row, (_, image, labels) in zip(axes, rows, strict=True):
        show_image(ax_row[0], image)
        for ax, mask in zip(ax_row[1:], labels.values(), strict=True):
            seen |= show_labels(ax, mask)
    add_class_legend(fig, class_names, seen)
    return fig


def message_figure(title: str, text: str) -> Figure:
    """A small figure that says why a figure could not be drawn (e.g. no ground truth)."""
    fig = Figure(figsize=(7, 1.6), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=12, fontweight="bold")
    ax = fig.subplots()
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(text, 90), ha="center", va="center", fontsize=10)
    return fig


def _row_title(sample: Sample, class_names: Sequence[str]) -> str:
    return "\n".join(
        t for t in (sample.image_id, class_name(class_names, sample.cls), sample.note) if t
    )
