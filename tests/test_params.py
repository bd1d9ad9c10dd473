"""singer_rec.params.from_params: renamed keys fail with their new name."""
from dataclasses import dataclass
from typing import ClassVar

import pytest

from singer_rec.params import from_params


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
