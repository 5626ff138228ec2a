"""Training curves: every loss column of a stage's ``history.csv`` against the step.

One matplotlib figure per experiment, one panel per training stage (EPS pretraining, SMAF
self-training, DeepLab). Each loss is drawn raw (faint) and as a trailing moving average; the
y axis is logarithmic when the plotted values span decades (a loss weighted ×100 beside
unweighted ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from smaf.errors import DataError
from smaf.io import PathLike
from smaf.report.plots import DPI, save_figure

#: History columns that are not losses (never plotted). ``note``: the one row of a stage whose
#: model was taken from a checkpoint (smaf.stages.published), which has no loss.
NON_LOSS_COLUMNS = ("step", "lr", "epoch", "time", "images_per_s", "note")
#: Log scale when the smoothed curves span more than this many decades.
LOG_DECADES = 1.5
#: Default smoothing: the window is this fraction of the history's length.
SMOOTH_FRACTION = 1 / 50


def read_history_csv(path: PathLike) -> pd.DataFrame:
    """A training history CSV (``step, lr, loss, ...``)."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"training history {path} not found; run its training rule.") from None
    if "step" not in df.columns:
        raise DataError(f"{path} is not a training history (no 'step' column).")
    return df


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter windows at the start)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or values.size == 0:
        return values
    return pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()


def loss_columns(history: pd.DataFrame) -> list[str]:
    """The columns of ``history`` that are plotted: every one but :data:`NON_LOSS_COLUMNS`."""
    return [c for c in history.columns if c not in NON_LOSS_COLUMNS]


def wants_log_scale(series: Sequence[np.ndarray]) -> bool:
    """Log scale when every value is positive and they span more than :data:`LOG_DECADES`."""
    finite = [s[np.isfinite(s)] for s in series]
    values = np.concatenate(finite) if finite else np.array([])
    if values.size == 0 or values.min() <= 0:
        return False
    return math.log10(values.max() / values.min()) > LOG_DECADES


def stage_title(path: PathLike) -> str:
    """Panel title from a history path: ``results/<ds>/pretrain/history.csv`` → ``'EPS
    pretraining'``, ``results/<ds>/<exp>/self_train/...`` → ``'SMAF self-training'``."""
    stage = Path(path).parent.name
    names = {"pretrain": "EPS pretraining", "self_train": "SMAF self-training"}
    return names.get(stage, {"deeplab": "DeepLab"}.get(stage, stage))


def plot_history(ax: Axes, history: pd.DataFrame, *, title: str, smooth: int | None = None) -> None:
    """Draw every loss column of ``history`` on ``ax`` (raw faint, smoothed solid).

    ``smooth``: moving-average window in points; None = :data:`SMOOTH_FRACTION` of the length.
    """
    window = smooth if smooth is not None else max(1, round(len(history) * SMOOTH_FRACTION))
    steps = pd.to_numeric(history["step"], errors="coerce").to_numpy(dtype=float)
    smoothed = []
    for k, col in enumerate(loss_columns(history)):
        raw = pd.to_numeric(history[col], errors="coerce").to_numpy(dtype=float)
        line = moving_average(raw, window)
        smoothed.append(line)
        color = f"C{k % 10}"
        if window > 1:
            ax.plot(steps, raw, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(steps, line, color=color, linewidth=1.6, label=col)
    if wants_log_scale(smoothed):
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss (log scale)" if ax.get_yscale() == "log" else "loss")
    ax.grid(True, which="major", color="#e6e6e6")
    if smoothed:
        note = f"moving average of {window} steps" if window > 1 else None
        ax.legend(fontsize=8, title=note, title_fontsize=7)


def curves_figure(
    histories: Mapping[str, pd.DataFrame], *, title: str = "", smooth: int | None = None
) -> Figure:
    """One panel per history (``{panel title: history}``), side by side."""
    n = max(len(histories), 1)
    fig = Figure(figsize=(4.6 * n, 3.6), dpi=DPI, layout="constrained")
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, history) in zip(axes, histories.items(), strict=False):
        plot_history(ax, history, title=name, smooth=smooth)
    return fig


def make_curves(
    histories: Sequence[PathLike],
    out_png: PathLike,
    out_svg: PathLike | None = None,
    *,
    title: str = "",
    smooth: int | None = None,
) -> Figure:
    """Rule ``figure_curves``: the curves of ``histories`` (one panel each, titled by stage)
    written to ``out_png`` (and ``out_svg``); returns the figure."""
    fig = curves_figure(
        {stage_title(p): read_history_csv(p) for p in histories}, title=title, smooth=smooth
    )
    save_figure(fig, out_png)
    if out_svg is not None:
        save_figure(fig, out_svg)
    return fig
