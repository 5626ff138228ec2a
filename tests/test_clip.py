"""The CLIP base's library part (smaf.clip): loading OpenAI-format checkpoints, prompts, CAMs,
and one clear message per bad input, raised before any work."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from clip_checkpoint import tiny_clip_state

import smaf.clip.tokenizer as clip_tokenizer
from smaf.clip import (
    ClipCAMConfig,
    background_words,
    build_clip,
    class_prompts,
    image_cams,
    load_clip,
    text_features,
)
from smaf.clip.cams import box_mask, check_image_size
from smaf.errors import ConfigError, DataError, SmafError

#: One torch thread: OpenMP threads spinning on shared cores slow tiny models tenfold.
pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
#: Fewer blocks than the fidelity model (the vocabulary stays full: BPE ids go up to 49407).
SMALL = {"vision_layers": 3, "text_layers": 1}


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return tiny_clip_state(**SMALL)


@pytest.fixture(scope="module")
def tiny_model(tiny_state):
    return build_clip(tiny_state)


def test_architecture_is_read_from_the_state_dict(tiny_model):
    arch = tiny_model.arch
    assert (arch.vision_width, arch.vision_layers, arch.patch_size, arch.grid) == (64, 3, 16, 7)
    assert (arch.text_width, arch.text_layers, arch.embed_dim, arch.context_length) == (
        64,
        1,
        32,
        77,
    )


def test_plain_state_dict_and_torchscript_archive_load_the_same_model(tmp_path, tiny_state):
    plain = tmp_path / "plain.pt"
    torch.save({f"module.{k}": v for k, v in tiny_state.items()}, plain)  # DataParallel prefix
    model = load_clip(plain)
    script = tmp_path / "script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        torch.jit.script(model).save(str(script))
    again = load_clip(script)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(model.visual.proj, tiny_state["visual.proj"].float())


def test_openai_scalars_next_to_the_parameters_are_ignored(tiny_state):
    extra = {**tiny_state, "input_resolution": torch.tensor(112), "vocab_size": torch.tensor(3)}
    assert build_clip(extra).arch.vocab_size == 49408


def test_positional_embedding_is_interpolated_to_any_grid(tiny_model):
    pos = tiny_model.visual.positional_embedding
    assert torch.equal(tiny_model.visual.position(7, 7), pos)  # the pretraining grid: unchanged
    assert tiny_model.visual.position(3, 11).shape == (1 + 33, 64)
    tokens, attns = tiny_model.visual.tokens(torch.zeros(1, 3, 48, 176))
    assert tokens.shape == (1 + 33, 1, 64) and len(attns) == 2 and attns[0].shape == (1, 34, 34)
    _, last = tiny_model.visual.tokens(torch.zeros(1, 3, 48, 176), keep_attn=1)
    assert len(last) == 1 and torch.equal(last[0], attns[-1])


def test_not_a_clip_checkpoint_is_one_message_naming_the_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(SmafError, match="notes.pt is not a CLIP checkpoint"):
        load_clip(text)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(2, 8)}, other)
    with pytest.raises(SmafError, match=r"resnet.pth is not an OpenAI-format CLIP.*visual.conv1"):
        load_clip(other)
    with pytest.raises(SmafError, match="CLIP checkpoint not found"):
        load_clip(tmp_path / "missing.pt")


def test_resnet_clip_is_refused(tmp_path):
    rn = tmp_path / "RN50.pt"
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(4, 4, 1, 1)}, rn)
    with pytest.raises(SmafError, match="RN50.pt is a ResNet CLIP; .* needs a ViT"):
        load_clip(rn)


def test_wrong_shapes_are_not_clip(tiny_state):
    bad = {**tiny_state, "visual.ln_pre.weight": torch.zeros(3)}
    with pytest.raises(SmafError, match="not an OpenAI-format ViT CLIP checkpoint"):
        build_clip(bad, "x.pt")


def test_prompts_are_clip_es_for_voc_and_coco_and_the_names_elsewhere():
    assert class_prompts(["bird", "cow", "tvmonitor"], "voc") == [
        "bird avian",
        "cow",
        "tvmonitor screen",
    ]
    assert class_prompts(["tv", "couch"], "coco") == ["tvmonitor screen", "sofa"]
    assert class_prompts(["tvmonitor", "my dog"], "folder") == ["tvmonitor", "my dog"]
    assert class_prompts(["bird"], "voc", {"bird": "parrot"}) == ["parrot"]


def test_default_background_drops_a_word_that_is_a_class():
    cfg = ClipCAMConfig()
    words = background_words(cfg, "folder", ["tree", "car"])
    assert "tree" not in words and "sky" in words and len(words) == 24
    assert "keyboard" not in background_words(cfg, "coco", ["person"])
    assert background_words(ClipCAMConfig(background=("sky",)), "voc", ["tree"]) == ["sky"]


def test_a_class_with_no_prompt_is_one_message():
    with pytest.raises(ConfigError, match="class 'cat' has no CLIP prompt"):
        class_prompts(["dog", "cat"], "folder", {"cat": " "})
    with pytest.raises(ConfigError, match="no class named 'cta'"):
        class_prompts(["dog", "cat"], "folder", {"cta": "cat"})
    with pytest.raises(ValueError, match="template"):
        ClipCAMConfig(template="a photo")


def test_an_image_smaller_than_a_patch_is_refused_before_any_work(tiny_model, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr("smaf.clip.cams.grad_cams", no_work)
    img = np.zeros((10, 40, 3), np.uint8)
    feats = torch.zeros(2, 32)
    with pytest.raises(DataError, match="10x40 pixels, smaller than one 16x16 CLIP patch"):
        image_cams(tiny_model, img, [0], feats, feats, ClipCAMConfig())
    with pytest.raises(DataError, match=r"a\.jpg is 20x15"):
        check_image_size((20, 15), 16, "a.jpg")


def test_missing_extra_is_one_line_with_the_pip_command(monkeypatch):
    clip_tokenizer._tokenizer.cache_clear()
    monkeypatch.setattr(clip_tokenizer.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SmafError, match=r"pip install 'smaf\[clip\]'"):
        clip_tokenizer.tokenize(["a dog"])
    clip_tokenizer._tokenizer.cache_clear()


def test_box_mask_follows_clip_es_box_ends():
    cam = torch.zeros(5, 6)
    cam[1, 1] = 1.0  # a one-pixel region: its box [1:2, 1:2]
    cam[3:5, 4:6] = 0.9  # touches the last row and column: its box stops one short
    mask = box_mask(cam, 0.4)
    expected = torch.zeros(5, 6)
    expected[1, 1] = 1
    expected[3:4, 4:5] = 1
    assert torch.equal(mask, expected)
    assert box_mask(torch.zeros(4, 4), 0.4).sum() == 0  # no region, no box (CLIP-ES: empty)


def test_cams_of_present_classes_at_image_size_with_scales_and_flips(tiny_model):
    cfg = ClipCAMConfig(scales=(0.75,), flip=True)
    classes = text_features(tiny_model, class_prompts(["dog", "cat", "car"], "folder"), "{}")
    bg = text_features(tiny_model, ["sky", "road"], cfg.template)
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    out = image_cams(tiny_model, img, [2, 0], classes, bg, cfg)
    assert out.cams.shape == out.refined.shape == (2, 40, 56)
    assert out.classes.tolist() == [2, 0]
    for maps in (out.cams, out.refined):
        assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0 + 1e-6
        assert float(maps.amax(dim=(1, 2)).min()) > 0.2  # scale-averaged maps keep a peak
    with torch.inference_mode():  # as a stage may call it: Grad-CAM still gets its gradients
        swapped = image_cams(tiny_model, img, [0, 2], classes, bg, cfg)
    assert torch.allclose(swapped.refined.flip(0), out.refined, atol=1e-5)  # order is irrelevant


def test_cpu_benchmark_measures_clip_cams(tiny_model):
    spec = importlib.util.spec_from_file_location("bench_clip", REPO / "bench" / "clip_cams.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.VIT_B16.heads(bench.VIT_B16.vision_width) == 12
    result = bench.measure(images=1, size=(40, 48), arch=tiny_model.arch)
    assert result["images"] == 1 and result["images_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["cpu_s_per_image"] > 0
