"""Project configuration as Kedro loads it: environments and runtime overrides."""
import pytest
from kedro.config import OmegaConfigLoader

from conftest import PROJECT_ROOT
from singer_rec.settings import CONFIG_LOADER_ARGS


def _parameters(env: str, runtime_params: dict | None = None) -> dict:
    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"), env=env, runtime_params=runtime_params, **CONFIG_LOADER_ARGS
    )
    return loader["parameters"]


@pytest.mark.parametrize("env", ["industrial", "office", "giftcards"])
def test_dotted_runtime_override_keeps_the_rest_of_a_base_block(env):
    base = _parameters("local")["evaluate"]
    overridden = _parameters(env, {"evaluate": {"valid_max_rows": 200}})["evaluate"]
    assert overridden == {**base, "valid_max_rows": 200}


def test_environment_blocks_override_base_values():
    industrial = _parameters("industrial")
    assert _parameters("local")["sft"]["train"]["lr"] != 3.0e-4  # the demo's own
    assert industrial["sft"]["train"]["lr"] == 3.0e-4  # the paper's
    assert industrial["sid"]["codebook_size"] == 256
    assert industrial["prompts"]["sft_tasks"] == [
        "semantic", "sid_to_title", "title_to_sid", "title_history_to_sid", "sid_history_to_title", "description_to_sid",
    ]
