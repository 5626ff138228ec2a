"""smaf.progress: when lines are written and what they say."""

from __future__ import annotations

from smaf.progress import Progress, format_duration


def test_format_duration() -> None:
    assert format_duration(0) == "0:00:00"
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(float("inf")) == "?"
    assert format_duration(float("nan")) == "?"


def test_every_n_items_and_the_last() -> None:
    lines: list[str] = []
    p = Progress("crf", 5, every=2, log=lines.append)
    for _ in range(5):
        p.update()
    p.close()  # the last line already showed 5/5: nothing more
    assert [line.split(",")[0] for line in lines] == [
        "crf: 2/5 images",
        "crf: 4/5 images",
        "crf: 5/5 images",
    ]
    assert "images/s" in lines[0] and "elapsed" in lines[0] and "ETA" in lines[0]


def test_skipped_items_do_not_count_in_the_rate() -> None:
    lines: list[str] = []
    p = Progress("seeds", 4, every=4, log=lines.append)
    p.update(3, counted=False)
    p.update(1)
    assert lines[0].startswith("seeds: 4/4 images (1 computed), ")
    assert p.counted == 1 and p.skipped == 3


def test_training_style_line_with_scaled_rate_and_extra() -> None:
    lines: list[str] = []
    p = Progress(
        "pretrain",
        10,
        unit="steps",
        every=5,
        start=4,
        rate_unit="images",
        rate_scale=8,
        log=lines.append,
    )
    p.update(extra="loss=0.5000")  # 5: a multiple of every
    assert lines[0].startswith("pretrain: 5/10 steps, ")
    assert " images/s, " in lines[0] and lines[0].endswith("loss=0.5000")


def test_unknown_total_and_interval() -> None:
    lines: list[str] = []
    p = Progress("download x", None, unit="MB", interval_s=0.0, fmt="{:.1f}", log=lines.append)
    p.update(1.25)
    assert lines == [lines[0]] and lines[0].startswith("download x: 1.2 MB, ")
    assert "ETA" not in lines[0]
