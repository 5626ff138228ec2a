"""Every setting has one home (issue 20 §2): the dataclasses of smaf.settings.

The schema and the dataclasses are walked in parallel: each section a stage reads has exactly
the dataclass's keys, and every default the schema fills in is the dataclass's default. The
one constructor builds nested and flat parts, and names unknown keys with their section."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import pytest
import yaml
from workflow_utils import REPO_ROOT

from smaf.config import RUNTIME_KEYS, dataclass_from, settings_dict
from smaf.crf import DenseCRF, crf_from_labels, dense_crf
from smaf.errors import ConfigError
from smaf.settings import (
    SECTIONS,
    DeepLabSettings,
    DenseCRFConfig,
    LabelCRFParams,
    ProbCRFParams,
    SeedsSettings,
    SelfTrainSettings,
)

SCHEMA = yaml.safe_load((REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _keys(cls) -> dict[str, object]:
    """Config key → field (a FLAT part's keys inlined; keys that come from elsewhere, e.g. the
    run's seed, left out)."""
    out = {}
    for f in fields(cls):
        if f.metadata.get("source"):
            continue
        value = f.default_factory() if callable(f.default_factory) else f.default
        if f.metadata.get("flat"):
            out.update(_keys(type(value)))
        else:
            out[f.name] = f
    return out


def _walk(cls, node: dict, where: str) -> list[str]:
    """Differences between settings dataclass ``cls`` and its schema ``node``."""
    node = _resolve(node)
    props = {k: _resolve(v) for k, v in node["properties"].items()}
    keys = _keys(cls)
    problems = [f"{where}.{k}: in the schema only" for k in sorted(set(props) - set(keys))]
    problems += [f"{where}.{k}: in {cls.__name__} only" for k in sorted(set(keys) - set(props))]
    defaults = settings_dict(cls())
    for key in sorted(set(props) & set(keys)):
        prop, f = props[key], keys[key]
        value = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(value):
            problems += _walk(type(value), prop, f"{where}.{key}")
        elif "default" in prop and prop["default"] != defaults[key]:
            problems.append(
                f"{where}.{key}: schema default {prop['default']!r}, "
                f"{cls.__name__} default {defaults[key]!r}"
            )
    return problems


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_the_schema_and_the_settings_dataclass_agree_on_keys_and_defaults(section):
    assert _walk(SECTIONS[section], SCHEMA["properties"][section], section) == []


def test_the_crf_defaults_are_written_once():
    """smaf.crf's functions take their defaults from the settings dataclasses."""
    import inspect

    labels = inspect.signature(crf_from_labels).parameters
    for f in fields(LabelCRFParams):
        assert labels[f.name].default == getattr(LabelCRFParams(), f.name)
    probs = inspect.signature(dense_crf).parameters
    for f in fields(ProbCRFParams):
        if f.name in probs:
            assert probs[f.name].default == getattr(ProbCRFParams(), f.name)
    assert DenseCRF() == DenseCRF(**settings_dict(DenseCRFConfig()))


def test_nested_and_flat_parts_are_built_from_one_section():
    s = SelfTrainSettings.from_dict(
        {"thr": 0.3, "lr": 0.1, "iterations": 5, "teacher_cam": {"scales": [1]}, "device": "cpu"}
    )
    assert (s.thr, s.optim.lr, s.loop.iterations, s.loop.device) == (0.3, 0.1, 5, "cpu")
    assert s.teacher_cam.scales == (1.0,) and s.teacher_cam.flip  # the other keys: defaults
    # written back as the section: runtime keys only in to_dict (a DDP worker needs them)
    assert "device" in s.to_dict() and not set(RUNTIME_KEYS) & set(s.params())
    assert SelfTrainSettings.from_dict(s.to_dict()) == s
    assert list(s.params()) == sorted(s.params())
    # a part's own default wins over its class's: DeepLab accumulates 2 micro-batches
    assert DeepLabSettings().loop.grad_accum == 2 and SelfTrainSettings().loop.grad_accum == 1


def test_unknown_keys_and_bad_values_name_their_section():
    with pytest.raises(ConfigError, match=r"'self_train': unknown key\(s\) lerning_rate"):
        SelfTrainSettings.from_dict({"lerning_rate": 1})
    with pytest.raises(ConfigError, match=r"'deeplab.test.crf': unknown key\(s\) bi_ww"):
        DeepLabSettings.from_dict({"test": {"crf": {"bi_ww": 1}}})
    with pytest.raises(ConfigError, match="'self_train.teacher_cam': scales must be positive"):
        SelfTrainSettings.from_dict({"teacher_cam": {"scales": [0]}})
    with pytest.raises(ConfigError, match="'deeplab.augment': expected a mapping"):
        dataclass_from(DeepLabSettings, {"augment": 3}, "deeplab")


def test_thr_auto_is_a_setting_until_the_job_resolves_it():
    # `thr: auto` (the held-out sweep's choice) passes the range checks; numbers still get them.
    assert SeedsSettings.from_dict({"thr": "auto"}).thr == "auto"
    assert SelfTrainSettings.from_dict({"thr": "auto"}).params()["thr"] == "auto"
    assert SeedsSettings.from_dict({"thr": "auto"}) != SeedsSettings()  # its own seeds pass
    with pytest.raises(ConfigError, match=r"seeds.thr must be in \(0, 1\) or auto, got 1.5"):
        SeedsSettings.from_dict({"thr": 1.5})
    with pytest.raises(ConfigError, match="self_train.thr must be > 0 or auto, got 0"):
        SelfTrainSettings.from_dict({"thr": 0})


def test_settings_reach_a_ddp_worker_as_json_and_come_back_equal():
    from smaf.distributed import _jsonable

    settings = SelfTrainSettings.from_dict({"thr": 0.3, "device": "cpu", "gpus": 2})
    spec = _jsonable({"settings": settings})
    assert SelfTrainSettings.of(spec["settings"]) == settings
