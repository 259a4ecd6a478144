from __future__ import annotations

import pytest

from regionspot.config import (
    ConfigError,
    FusionConfig,
    RegionSpotConfig,
    apply_overrides,
    as_zero_shot_method,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


def test_dotted_overrides_are_typed():
    config = apply_overrides(RegionSpotConfig(), [
        "fusion.depth=1", "fusion.dropout=0.0", "fusion.region_self_attention=false",
        "sam.token_place=hypernet_mlp", "clip.image_size=336", "text.bank=null",
    ])
    assert config.fusion.depth == 1 and isinstance(config.fusion.depth, int)
    assert config.fusion.dropout == 0.0
    assert config.fusion.region_self_attention is False
    assert config.sam.token_place == "hypernet_mlp"
    assert config.clip.image_size == 336
    assert config.text.bank is None
    assert RegionSpotConfig().fusion.depth == 3, "overrides must not change the original"


@pytest.mark.parametrize(("override", "message"), [
    ("fusion.depht=2", "unknown key"),
    ("fusion.depth=two", "expected int"),
    ("fusion.depth=1.5", "expected an integer"),
    ("sam.token_place=decoder", "not one of"),
    ("fusion=3", "is a section"),
    ("nokey", "key.sub=value"),
    ("clip.enabled=maybe", "true/false"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RegionSpotConfig(), [override])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    config = apply_overrides(RegionSpotConfig(), ["fusion.depth=6", "clip.use_class_token=false"])
    save_config(config, tmp_path / f"c{suffix}")
    assert load_config(RegionSpotConfig, tmp_path / f"c{suffix}") == config


def test_from_dict_rejects_unknown_nested_keys():
    data = to_dict(RegionSpotConfig())
    data["fusion"]["extra"] = 1
    with pytest.raises(ConfigError, match="fusion: unknown key"):
        from_dict(RegionSpotConfig, data)


def test_partial_dict_keeps_defaults():
    config = from_dict(RegionSpotConfig, {"fusion": {"depth": 1}})
    assert config.fusion == FusionConfig(depth=1)


def test_lists_of_sections_and_scalars():
    from regionspot.train.config import DatasetConfig, TrainConfig

    config = TrainConfig(datasets=[DatasetConfig(name="a"), DatasetConfig(name="b")])
    changed = apply_overrides(config, ["datasets.1.ratio=2", "optim.decay_at=10,20", "eval_dataset=null"])
    assert changed.datasets[1].ratio == 2.0 and changed.optim.decay_at == [10, 20]
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(config, ["datasets.5.ratio=1"])
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(config, ["optim.decay_at=10,x"])
    data = to_dict(config)
    data["datasets"][0]["bogus"] = 1
    with pytest.raises(ConfigError, match=r"datasets\.0: unknown key"):
        from_dict(TrainConfig, data)


def test_zero_shot_method_names_are_checked():
    assert as_zero_shot_method("clip-crop") == "clip-crop"
    assert as_zero_shot_method("clip-mask-crop") == "clip-mask-crop"
    with pytest.raises(ConfigError, match=r"'regionspot' is not one of \['clip-mask-crop', 'clip-crop'\]"):
        as_zero_shot_method("regionspot")
