"""smaf.config: every config problem is found before any job runs, named, with a suggestion."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO_ROOT

from smaf.config import (
    check_config,
    combination_problems,
    deep_merge,
    load_schema,
    schema_problems,
)
from smaf.errors import ConfigError


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema(REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture()
def demo() -> dict:
    return copy.deepcopy(yaml.safe_load((REPO_ROOT / "config.yaml").read_text()))


@pytest.mark.parametrize(
    "presets",
    [
        ["folder-example.yaml"],
        ["coco2014.yaml"],
        ["voc2012.yaml", "clip.yaml"],
        ["folder-example.yaml", "folder-clip-example.yaml"],
    ],
)
def test_the_other_presets_are_valid(schema, demo, presets) -> None:
    merged = demo
    for preset in presets:  # applied in this order, as documented
        merged = deep_merge(merged, yaml.safe_load((REPO_ROOT / "config" / preset).read_text()))
    assert schema_problems(merged, schema) == []
    assert combination_problems(merged) == []


def test_the_shipped_configs_are_valid(schema, demo) -> None:
    assert schema_problems(demo, schema) == []
    assert combination_problems(demo) == []
    merged = demo
    for preset in ("voc2012.yaml", "paper.yaml"):  # applied in this order, as documented
        merged = deep_merge(merged, yaml.safe_load((REPO_ROOT / "config" / preset).read_text()))
        assert schema_problems(merged, schema) == [], preset
        assert combination_problems(merged) == [], preset


def test_misspelled_top_level_key_is_rejected_with_a_suggestion(schema, demo) -> None:
    demo["self_trian"] = {"thr": 0.1}
    (problem,) = schema_problems(demo, schema)
    assert "unknown key 'self_trian' at the top level (did you mean 'self_train'?)" in problem


def test_misspelled_nested_key_is_named_with_its_section(schema, demo) -> None:
    demo["self_train"]["thrr"] = 0.3
    demo["crf"]["labels"]["gt_prb"] = 0.7
    problems = schema_problems(demo, schema)
    assert any(
        "unknown key 'gt_prb' in crf.labels (did you mean 'gt_prob'?)" in p for p in problems
    )
    assert any("unknown key 'thrr' in self_train (did you mean 'thr'?)" in p for p in problems)


def test_out_of_range_value_is_named_by_its_path(schema, demo) -> None:
    demo["self_train"]["thr"] = 5.0
    with pytest.raises(ConfigError, match=r"^experiment 'x': self_train\.thr: 5\.0 is greater"):
        check_config(demo, schema, "experiment 'x'")


def test_impossible_combinations(demo) -> None:
    demo["self_train"]["target_stride"] = 64
    demo["self_train"]["augment"]["crop_size"] = 48
    demo["train"]["gpus"] = 3
    demo["model"]["head"] = "cam"
    text = " ".join(combination_problems(demo))
    assert "self_train.target_stride 64 is larger than self_train.augment.crop_size 48" in text
    assert "pretrain.batch_size 8 is not divisible by grad_accum 1 x train.gpus 3" in text
    assert "pretrain.method 'eps' needs a background channel" in text


def test_deep_merge_merges_dicts_key_by_key_and_replaces_the_rest() -> None:
    base = {"a": 1, "s": {"x": 1, "y": {"p": 1, "q": 2}}, "keep": [1, 2]}
    over = {"s": {"y": {"q": 3}, "z": 4}, "keep": [9]}
    assert deep_merge(base, over) == {
        "a": 1,
        "s": {"x": 1, "y": {"p": 1, "q": 3}, "z": 4},
        "keep": [9],
    }
    assert base["s"]["y"]["q"] == 2  # the base is not modified


def test_the_clip_base_names_its_model_clip_and_refuses_what_needs_a_classifier(demo) -> None:
    demo["pretrain"]["method"] = "clip"  # evaluation.models still says eps
    demo["self_train"]["teacher"] = "online"
    demo["deeplab"]["init_from"] = "clip"
    demo["pretrain"]["init_checkpoint"] = "x.pth"
    demo["seeds"]["thr"] = "auto"
    text = " ".join(combination_problems(demo))
    want = "evaluation.models names 'eps', but pretrain.method 'clip' makes the base model"
    assert want in text
    assert "self_train.teacher 'online' runs a pretrained classifier" in text
    assert "deeplab.init_from 'clip': the CLIP base has no ResNet38d backbone" in text
    assert "pretrain.init_checkpoint replaces EPS pretraining" in text
    assert "seeds.thr: auto is not wired for the CLIP base's seeds" in text
    demo["pretrain"]["method"] = "eps"
    demo["deeplab"]["init_from"] = None
    demo["pretrain"]["init_checkpoint"] = None
    demo["deeplab"]["labels_from"] = "clip"
    demo["seeds"]["thr"] = 0.2
    assert combination_problems(demo) == [
        "deeplab.labels_from names 'clip', but pretrain.method 'eps' makes the base model 'eps': "
        "write 'eps' (or 'smaf') there."
    ]
