"""`kedro run --config=conf/paper_gpu.yml`: the paper's Appendix B settings as the run resolves them
(the run-config file, the project's --params merge, then Kedro's config loader), and the one key
that sets the number of GPUs of every training stage."""
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from kedro.config import OmegaConfigLoader
from omegaconf.errors import InterpolationToMissingValueError

from conftest import PROJECT_ROOT
from singer_rec import cli as project_cli
from singer_rec.pipeline_registry import validate_run_parameters
from singer_rec.settings import CONFIG_LOADER_ARGS

CONF = PROJECT_ROOT / "conf"
PAPER = CONF / "paper_gpu.yml"
TRAINING_STAGES = ("sft", "rl", "sdpo")


def runtime_params(monkeypatch, *args: str) -> tuple[str, dict]:
    """(env, runtime params) that `kedro run ARGS` hands to the session: the project's run command
    (the run-config file, --params merged key by key over it), stopped where Kedro's run begins."""
    seen: dict = {}
    monkeypatch.setattr(project_cli, "kedro_run", SimpleNamespace(callback=lambda **kwargs: seen.update(kwargs)))
    result = CliRunner().invoke(project_cli.cli, ["run", *args])
    assert result.exit_code == 0, result.output
    return seen["env"], seen["params"] or {}


def parameters(monkeypatch, *args: str) -> dict:
    """The parameters `kedro run ARGS` runs with."""
    env, params = runtime_params(monkeypatch, *args)
    return OmegaConfigLoader(str(CONF), env=env, runtime_params=params, **CONFIG_LOADER_ARGS)["parameters"]


@pytest.fixture
def folders(tmp_path):
    """Stand-ins for the two model folders (the config check wants the LLM folder to exist)."""
    llm, embedding = tmp_path / "Qwen2.5-0.5B-Instruct", tmp_path / "Qwen3-Embedding-0.6B"
    llm.mkdir()
    embedding.mkdir()
    return llm, embedding


def paper(monkeypatch, folders, *more: str) -> dict:
    llm, embedding = folders
    extra = ",".join((f"llm_path={llm}", f"embedding_path={embedding}", *more))
    return parameters(monkeypatch, "--env=industrial", f"--config={PAPER}", f"--params={extra}")


def test_paper_config_resolves_to_the_papers_settings(monkeypatch, folders):
    llm, embedding = folders
    params = paper(monkeypatch, folders)
    sft, rl, evaluate, embed = params["sft"], params["rl"], params["evaluate"], params["embed"]
    assert sft["model"]["preset"] == "hf"
    assert sft["model"]["hf"] == {"path": str(llm), "allow_download": False, "trust_remote_code": False}
    assert (embed["encoder"], embed["model_path"], embed["device"], embed["dtype"]) == (
        "sentence-transformers", str(embedding), "auto", "auto")
    train = sft["train"]
    assert (train["learning_rate"], train["batch_size"], train["epochs"], train["patience"]) == (3.0e-4, 128, 10, 1)
    assert (train["device"], train["autocast"]) == ("auto", "auto")
    settings = rl["settings"]
    assert (settings["learning_rate"], settings["batch_size"], settings["num_generations"], settings["beta"],
            settings["epochs"], settings["max_steps"]) == (1.0e-5, 512, 16, 0.1, 2, None)
    assert rl["device"] == "auto" and settings["autocast"] == "auto"
    assert (evaluate["device"], evaluate["max_rows"]) == ("auto", None)  # the whole test split on the GPU
    assert evaluate["autocast"] == "auto"
    for stage in TRAINING_STAGES:
        assert params[stage]["num_processes"] == 1  # one GPU unless num_gpus says otherwise
    # the environment's other keys stay (soft merge): Industrial's SIDs and model-independent settings
    assert params["sid"]["codebook_size"] == 256
    assert sft["train"]["warmup_ratio"] == 0.03
    validate_run_parameters({block: params[block] for block in ("embed", "sft", "rl", "sdpo", "evaluate")})


def test_num_gpus_is_one_key_for_every_training_stage(monkeypatch, folders):
    params = paper(monkeypatch, folders, "num_gpus=4")
    assert {stage: params[stage]["num_processes"] for stage in TRAINING_STAGES} == dict.fromkeys(TRAINING_STAGES, 4)
    # a stage's own key still wins over the shared one
    params = paper(monkeypatch, folders, "num_gpus=4", "sdpo.num_processes=1")
    assert (params["sft"]["num_processes"], params["rl"]["num_processes"], params["sdpo"]["num_processes"]) == (4, 4, 1)


@pytest.mark.parametrize("env", ["local", "industrial"])
def test_num_gpus_works_without_the_paper_config(monkeypatch, env):
    params = parameters(monkeypatch, f"--env={env}", "--params=num_gpus=2")
    assert {stage: params[stage]["num_processes"] for stage in TRAINING_STAGES} == dict.fromkeys(TRAINING_STAGES, 2)
    params = parameters(monkeypatch, f"--env={env}")
    assert {stage: params[stage]["num_processes"] for stage in TRAINING_STAGES} == dict.fromkeys(TRAINING_STAGES, 1)


@pytest.mark.parametrize("given,missing", [("embedding_path=/models/emb", "llm_path"),
                                           ("llm_path=/models/llm", "embedding_path")])
def test_a_missing_model_path_is_named_when_the_parameters_load(monkeypatch, given, missing):
    """Parameters load before any node runs: the error names the key to pass."""
    with pytest.raises(InterpolationToMissingValueError, match=rf"Missing mandatory value: {missing}\b"):
        parameters(monkeypatch, "--env=industrial", f"--config={PAPER}", f"--params={given}")
