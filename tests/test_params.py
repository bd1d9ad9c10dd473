"""singer_rec.params.from_params: renamed keys fail with their new name."""
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from singer_rec.params import check_fields, from_params, nested_defaults, rule


@dataclass
class Block:
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"lr": "learning_rate", "group_size": "num_generations"}
    learning_rate: float = 1e-3
    num_generations: int = 4


def test_a_renamed_key_fails_with_its_new_name():
    with pytest.raises(ValueError, match=r"^stage\.train\.lr was renamed to learning_rate$"):
        from_params(Block, {"lr": 0.1}, "stage.train")


def test_every_renamed_key_is_named_at_once():
    with pytest.raises(ValueError) as error:
        from_params(Block, {"group_size": 8, "lr": 0.1, "learning_rate": 0.2}, "b")
    assert str(error.value) == "b.group_size was renamed to num_generations; b.lr was renamed to learning_rate"


def test_new_names_build_and_a_class_attribute_is_no_parameter():
    assert from_params(Block, {"learning_rate": 2, "num_generations": 8}, "b") == Block(2.0, 8)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['b\.RENAMED_KEYS'\]"):
        from_params(Block, {"RENAMED_KEYS": {}}, "b")


def test_the_stage_settings_name_their_renamed_keys():
    from singer_rec.training.rl import RLSettings
    from singer_rec.training.sft import SFTSettings

    with pytest.raises(ValueError, match=r"^sft\.train\.lr was renamed to learning_rate$"):
        SFTSettings.from_dict({"lr": 1e-3})
    with pytest.raises(ValueError, match=r"^rl\.settings\.inner_updates was renamed to num_iterations$"):
        RLSettings.from_dict({"inner_updates": 2})
    assert RLSettings.from_dict({"num_generations": 8, "epsilon": 0.3, "num_iterations": 2}) == RLSettings(
        num_generations=8, epsilon=0.3, num_iterations=2)


@dataclass
class Grid:
    INTERNAL_FIELDS: ClassVar[tuple[str, ...]] = ("seed",)
    rates: list[float] = field(default_factory=lambda: [1e-3], metadata=rule(min_items=1))
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int = 42


def test_internal_fields_are_no_keys_and_lists_can_require_entries():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['g\.seed'\]; allowed keys of g: \['extra', 'rates'\]"):
        from_params(Grid, {"seed": 1}, "g")
    with pytest.raises(ValueError, match=r"^g\.rates must list at least 1 value\(s\), got \[\]$"):
        from_params(Grid, {"rates": []}, "g")
    assert from_params(Grid, {"extra": {"max_rows": None}}, "g").extra == {"max_rows": None}  # Any takes null


def test_check_fields_runs_the_rules_of_a_directly_built_instance():
    assert check_fields(Grid(rates=[0.1]), "g") == Grid(rates=[0.1])
    with pytest.raises(ValueError, match=r"^g\.rates must list at least 1 value\(s\)"):
        check_fields(Grid(rates=[]), "g")


def test_nested_defaults_fill_only_what_the_block_leaves_out():
    assert nested_defaults({"settings": {"beta": 0.2}}, "settings", seed=3) == {"settings": {"beta": 0.2, "seed": 3}}
    assert nested_defaults({"settings": {"seed": 5}}, "settings", seed=3) == {"settings": {"seed": 5}}
    assert nested_defaults({"work_dir": "w", "settings": None}, "settings", seed=3) == {"work_dir": "w", "settings": {"seed": 3}}
    built = Grid()
    assert nested_defaults(built, "settings", seed=3) is built
