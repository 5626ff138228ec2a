"""bench/gpu.py: a smoke run on the CPU end to end (every benchmark, fp32 and bf16), the FLOP
counts' relations by hand, the VOC sizes of a real run, and the small pure helpers."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys

import pytest
from workflow_utils import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "gpu.py"
TRAIN = ("eps_step", "smaf_step_offline", "smaf_step_online", "deeplab_step")


sys.path.insert(0, str(SCRIPT.parent))  # the scripts import bench/markdown_section.py
from markdown_section import markers, replace_section  # noqa: E402


def _load_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


gpu = _load_gpu()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """``{(benchmark, metric): (value, unit)}`` of one ``--smoke`` run (~10 s on 2 cores)."""
    out = tmp_path_factory.mktemp("bench") / "gpu.csv"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(out)]
    # One torch thread: spinning OpenMP threads slow a run tenfold when the cores are shared.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, "--no-markdown"], check=True, capture_output=True, timeout=300, env=env)
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["benchmark", "metric", "value", "unit"]
        return {(r["benchmark"], r["metric"]): (float(r["value"]), r["unit"]) for r in reader}


def _value(rows, bench: str, metric: str) -> float:
    value = rows[bench, metric][0]
    assert math.isfinite(value), (bench, metric, value)
    return value


@pytest.mark.slow
def test_smoke_covers_every_benchmark(smoke):
    benches = {b for b, _ in smoke}
    assert benches == {
        "matmul_bf16",
        *TRAIN,
        "seeds",
        "crf",
        "seeds_crf_amortised",
        "teacher_pass",
        "clip_cams",
        "sam_masks",
    }
    assert _value(smoke, "matmul_bf16", "tflops") > 0
    assert not any(m.startswith(("peak_mem", "error")) for _, m in smoke)  # CPU: no CUDA memory


@pytest.mark.slow
@pytest.mark.parametrize("bench", TRAIN)
def test_smoke_training_steps(smoke, bench):
    step, forward = (_value(smoke, bench, m) for m in ("tflop_per_step", "tflop_forward"))
    assert step > forward > 0  # the backward pass costs FLOPs too
    assert _value(smoke, bench, "batch_size") == 2 and _value(smoke, bench, "crop") == 64
    for v in ("fp32", "bf16"):
        s = _value(smoke, bench, f"s_per_iter_{v}")
        assert s > 0
        assert _value(smoke, bench, f"tflops_{v}") == pytest.approx(step / s, rel=1e-3)
        assert _value(smoke, bench, f"pct_peak_{v}") == pytest.approx(
            100 * step / s / _value(smoke, "matmul_bf16", "tflops"), rel=1e-3
        )
    # bf16 autocast from the same start and batch: close to, but not bit-equal with, fp32.
    assert 0 <= _value(smoke, bench, "loss_rel_diff_bf16") < 0.05
    assert (bench, "loss_rel_diff_fp32") not in smoke  # fp32 is the reference
    best, unit = smoke[bench, "best_s_per_iter"]
    assert best == min(_value(smoke, bench, f"s_per_iter_{v}") for v in ("fp32", "bf16"))
    assert unit in ("s/iter (fp32)", "s/iter (bf16)")


@pytest.mark.slow
def test_smoke_online_teacher_flops(smoke):
    """Scales 0.5/1/1.5/2 with flips: (0.25 + 1 + 2.25 + 4) × 2 = 15 student forwards."""
    teacher = _value(smoke, "smaf_step_online", "tflop_teacher")
    student_forward = _value(smoke, "smaf_step_offline", "tflop_forward")
    assert teacher == pytest.approx(15 * student_forward, rel=0.01)
    offline, online = (_value(smoke, b, "tflop_per_step") for b in TRAIN[1:3])
    assert online == pytest.approx(offline + teacher, rel=1e-3)
    # Same network, same batch: EPS and offline SMAF count the same FLOPs.
    assert _value(smoke, "eps_step", "tflop_per_step") == pytest.approx(offline, rel=1e-6)


@pytest.mark.slow
def test_smoke_seeds_crf_teacher(smoke):
    assert _value(smoke, "seeds", "tflop_per_image") > 0
    assert _value(smoke, "crf", "images_per_s") > 0
    for v in ("fp32", "bf16"):
        s = _value(smoke, "seeds", f"s_per_image_{v}")
        assert _value(smoke, "seeds", f"images_per_s_{v}") == pytest.approx(1 / s, rel=1e-3)
        assert _value(smoke, "teacher_pass", f"images_per_s_{v}") > 0
        sequential = _value(smoke, "seeds_crf_amortised", f"s_per_image_sequential_{v}")
        crf_s = 1 / _value(smoke, "crf", "images_per_s")
        assert sequential == pytest.approx(s + crf_s, rel=1e-3)
        assert _value(smoke, "seeds_crf_amortised", f"s_per_image_overlapped_{v}") > 0
    assert 0.9 <= _value(smoke, "seeds", "seed_agreement_bf16") <= 1.0


@pytest.mark.slow
def test_smoke_clip_cams(smoke):
    """A tiny CLIP on a 64×48 image: one forward and a backward per present class."""
    assert _value(smoke, "clip_cams", "classes_per_image") == 2
    assert _value(smoke, "clip_cams", "tflop_per_image") > 0
    s = _value(smoke, "clip_cams", "s_per_image")
    assert s > 0
    assert _value(smoke, "clip_cams", "images_per_s") == pytest.approx(1 / s, rel=1e-3)
    tflop = _value(smoke, "clip_cams", "tflop_per_image")
    assert _value(smoke, "clip_cams", "tflops") == pytest.approx(tflop / s, rel=1e-3)


@pytest.mark.slow
def test_smoke_sam_masks(smoke):
    """A tiny SAM, 4 × 4 points, with SAM's thresholds and with every mask kept."""
    assert _value(smoke, "sam_masks", "points_per_side") == 4
    encoder, decoder = (
        _value(smoke, "sam_masks", f"tflop_{p}_tiny") for p in ("encoder", "decoder")
    )
    assert encoder > 0 and decoder > 0
    assert _value(smoke, "sam_masks", "tflop_per_image_tiny") == pytest.approx(
        encoder + decoder, rel=1e-4
    )
    assert _value(smoke, "sam_masks", "encoder_s_tiny") > 0
    for kept in ("", "all_kept_"):
        s = _value(smoke, "sam_masks", f"s_per_image_{kept}tiny")
        assert s > 0
        assert _value(smoke, "sam_masks", f"images_per_s_{kept}tiny") == pytest.approx(
            1 / s, rel=1e-3
        )
        assert _value(smoke, "sam_masks", f"masks_{kept}tiny") >= 0
    # Thresholds at 0 keep at least the masks SAM's thresholds keep.
    assert _value(smoke, "sam_masks", "masks_all_kept_tiny") >= _value(
        smoke, "sam_masks", "masks_tiny"
    )


def test_sam_flops_of_the_official_models():
    """Counted on the meta device (no weights): ViT-H's encoder ~6 TFLOP (3 TMAC), ViT-B's ~1;
    the decoder's 1024 prompts cost the same for both (same decoder)."""
    bases = gpu.gpu_bases
    vit_b = bases.sam_arch("vit_b")
    b_enc, b_dec = bases.sam_flops(vit_b, 32)
    h_enc, h_dec = bases.sam_flops(bases.sam_arch("vit_h"), 32)
    assert 0.8 < b_enc < 1.2 and 5.0 < h_enc < 7.0
    assert b_dec == pytest.approx(h_dec) and 1.0 < b_dec < 10.0
    assert bases.sam_flops(vit_b, 16)[1] == pytest.approx(b_dec / 4)


@pytest.mark.slow
def test_render_section_of_smoke_rows(smoke):
    rows = [(b, m, v, u) for (b, m), (v, u) in smoke.items()]
    lines = gpu.render_section(rows, "header", ["fp32", "bf16"])
    assert lines[0] == "header"
    table = [line for line in lines if line.startswith("| ")]
    for bench in TRAIN:
        assert sum(line.startswith(f"| {bench} |") for line in table) == 2  # one per variant
    assert sum(line.startswith("| seeds |") for line in table) == 2
    assert any("teacher" in line for line in lines if line.startswith("- smaf_step_online"))
    assert any(line.startswith("- CRF (`labels`)") for line in lines)
    assert sum(line.startswith("| clip_cams |") for line in table) == 1
    assert sum(line.startswith("| sam_masks (") for line in table) == 2  # SAM's, all kept
    assert any(line.startswith("- COCO train (82,783 images)") for line in lines)


def test_real_run_takes_the_base_models_at_voc_size():
    setup = gpu.gpu_bases.make_bases_setup(smoke=False)
    assert setup.clip_arch.vision_width == 768 and setup.clip_arch.patch_size == 16
    assert setup.image_hw == (375, 500) and setup.points_per_side == 32
    assert setup.sam_models == ("vit_b", "vit_h")


def test_hours():
    assert gpu.gpu_bases.hours(1.0, 10_582) == "2.9 h"
    assert gpu.gpu_bases.hours(0.1, 10_582) == "18 min"


def test_real_run_takes_the_voc_preset_sizes():
    setup = gpu.make_setup(smoke=False)
    assert (setup.width, setup.batch_size, setup.crop) == (1.0, 8, 448)
    assert (setup.deeplab_batch, setup.deeplab_accum, setup.deeplab_crop) == (10, 2, 321)
    assert setup.image_hw == (375, 500) and setup.images == 32
    dl_cfg = gpu.deeplab_config(setup.preset)[0]
    # The VOC preset trains the Caffe-layout ResNet-101 of Table 1; the bench uses no weights.
    assert dl_cfg.backbone == "resnet101_caffe" and dl_cfg.pretrained is None
    assert setup.preset["model"]["freeze_stem"] is True  # voc2012.yaml over config.yaml
    assert gpu.make_setup(smoke=True).preset["model"]["width"] == 0.125


def test_parse_args_defaults_and_errors():
    args = gpu.parse_args(["--smoke"])
    assert (args.device, args.variants, args.steps, args.warmup) == ("cpu", "fp32,bf16", 1, 1)
    args = gpu.parse_args([])
    assert args.device == "cuda" and args.variants.split(",") == list(gpu.VARIANTS)
    assert (args.steps, args.warmup) == (20, 5)
    with pytest.raises(SystemExit):
        gpu.parse_args(["--variants", "fp16"])
    with pytest.raises(SystemExit):
        gpu.parse_args(["--benchmarks", "eps,nonsense"])


def test_pct_of_peak():
    assert gpu.pct_of_peak(200.0, 800.0) == 25.0
    assert gpu.pct_of_peak(19.0 / 0.08, 800.0) == pytest.approx(29.6875)


def test_rel_diff():
    assert gpu.rel_diff([1.1, 2.0], [1.0, 2.0]) == pytest.approx(0.1)
    assert gpu.rel_diff([3.0, -1.5], [2.0, -1.0]) == pytest.approx(0.5)
    assert gpu.rel_diff([0.0], [0.0]) == 0.0
    assert math.isnan(gpu.rel_diff([math.nan], [1.0]))


def test_fastest_within():
    times = {"fp32": 1.0, "bf16": 0.5, "bf16_cl": 0.4, "bf16_cl_compile": 0.3}
    diffs = {"bf16": 0.005, "bf16_cl": 0.02, "bf16_cl_compile": math.nan}
    assert gpu.fastest_within(times, diffs, 0.01) == "bf16"
    assert gpu.fastest_within(times, diffs, 0.05) == "bf16_cl"  # NaN never counts as the same
    assert gpu.fastest_within({"fp32": 1.0}, {}, 0.0) == "fp32"  # the reference itself
    assert gpu.fastest_within({}, {}, 0.01) is None


def test_replace_section():
    start, end = markers("gpu")
    assert (start, end) == ("<!-- bench:gpu:start -->", "<!-- bench:gpu:end -->")
    text = f"# B\n\nintro\n{start}\nold\n{end}\n\nafter\n"
    assert replace_section(text, "gpu", gpu.HEADING, ["new", "lines"]) == (
        f"# B\n\nintro\n{start}\nnew\nlines\n{end}\n\nafter\n"
    )
    assert replace_section("# B\n\nintro\n\n", "gpu", gpu.HEADING, ["x"]) == (
        f"# B\n\nintro\n\n{gpu.HEADING}\n\n{start}\nx\n{end}\n"
    )
    other = f"{start}\nkeep\n{end}\n"  # another section's markers are left alone
    assert replace_section(other, "cpu", "## CPU", ["x"]).startswith(other)


def test_bases_benchmark_imports_only_public_modules():
    """bench/gpu_bases.py times what the stages call, through smaf.clip's and smaf.sam's public
    names, never stage internals (a stage's refactoring must not break the benchmark)."""
    import ast

    tree = ast.parse((SCRIPT.parent / "gpu_bases.py").read_text())
    smaf = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smaf")
    }
    assert smaf == {"smaf.clip", "smaf.sam"}
