from __future__ import annotations

from pathlib import Path

import pytest

from decnn_cli.config import RunConfig, config_to_dict, parse_override, read_toml
from decnn_cli.errors import ConfigError
from decnn_cli.resolve import build_config


def test_precedence_defaults_recipe_options_overrides():
    recipe = {"method": {"name": "decnn", "beta": 5.0}, "train": {"epochs": 3, "seed": 1}}
    cfg = build_config(recipe, {"train.seed": 7, "method.name": None}, ["method.beta=2.5"])
    assert cfg.method.name == "decnn"  # from the recipe: a None option does not override
    assert cfg.train.seed == 7  # option beats recipe
    assert cfg.method.beta == 2.5  # --set beats everything
    assert cfg.train.epochs == 3
    assert cfg.model.depth == 8  # default


def test_override_values_parse_as_toml():
    assert parse_override("train.lr=3e-4") == {"train": {"lr": 3e-4}}
    assert parse_override("data.download=true") == {"data": {"download": True}}
    assert parse_override("data.target=No_Beard") == {"data": {"target": "No_Beard"}}


@pytest.mark.parametrize("bad", ["method.alpah=0.5", "mehtod.alpha=0.5"])
def test_misspelt_key_is_one_clear_error(bad: str):
    with pytest.raises(ConfigError, match="unknown key") as info:
        build_config(overrides=[bad])
    assert info.value.exit_code == 2


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError, match=r"method\.alpha"):
        build_config(overrides=["method.alpha=1.5"])


def test_batch_size_auto_follows_the_training_split_size_and_a_bad_one_is_named():
    auto = build_config(overrides=["data.batch_size='auto'"]).data
    assert (auto.batch_for(4_999), auto.batch_for(5_000)) == (32, 128)
    assert build_config(overrides=["data.batch_size=64"]).data.batch_for(10) == 64  # a number is kept as given
    assert build_config().data.batch_size == 32  # the bundled digits' own default: 1,293 examples, as "auto" gives
    for bad in ("0", "-3", "'big'", "1.5"):
        with pytest.raises(ConfigError, match=r"data\.batch_size: batch_size must be a positive number or 'auto'"):
            build_config(overrides=[f"data.batch_size={bad}"])


def test_unknown_method_and_dataset_list_valid_names():
    with pytest.raises(ConfigError, match="unknown method 'foo'.*redecnn"):
        build_config(overrides=["method.name=foo"])
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'.*mnist"):
        build_config(overrides=["data.name=svhn"])


def test_override_without_section_is_rejected():
    with pytest.raises(ConfigError, match="section"):
        build_config(overrides=["epochs=3"])


def test_resolved_config_round_trips_through_toml(tmp_path: Path):
    import tomli_w

    cfg = build_config(overrides=["method.name=bayesnn", "data.root=/tmp/x", "train.epochs=2"])
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(config_to_dict(cfg)))
    assert RunConfig.model_validate(read_toml(path)) == cfg


def test_missing_and_malformed_recipe(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(bad)


def test_committed_recipes_validate():
    root = Path(__file__).resolve().parent.parent / "recipes"
    recipes = sorted(root.rglob("*.toml"))
    assert recipes, "recipes/ holds no TOML recipe"
    from decnn_cli.config import RECIPE_KEYS, RUN_SECTIONS

    for path in recipes:
        raw = read_toml(path)
        assert set(raw) <= set(RUN_SECTIONS) | RECIPE_KEYS | {"out_dir"}, path
        build_config({k: v for k, v in raw.items() if k in RUN_SECTIONS})


def test_table8_cpu_recipe_is_table7s_with_its_own_header():
    """Tables 7 and 8 read the same runs: their CPU recipes differ only in the table they name."""
    recipes = Path(__file__).resolve().parent.parent / "recipes"
    seven = (recipes / "table7" / "cpu.toml").read_text().splitlines()
    eight = (recipes / "table8" / "cpu.toml").read_text().splitlines()
    differing = [(a, b) for a, b in zip(seven, eight, strict=True) if a != b]
    assert [a.split(" =")[0] for a, _ in differing] == ["name", "title", "paper"]
