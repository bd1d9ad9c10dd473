"""Kedro project settings."""
import json
import os
import warnings
from pathlib import Path

from kedro.config import OmegaConfigLoader

from singer_rec.hooks import MlflowTrackingHook
from singer_rec.pipeline_registry import ParameterValidationHook

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

# Kedro 1.7.0's OmegaConfigLoader registers its own `globals` and `runtime_params` resolvers with
# OmegaConf.register_new_resolver(), which omegaconf 2.4 deprecated in favour of register_resolver()
# (omry/omegaconf#1322): a UserWarning on every `kedro run`. The call is Kedro's, not the project's
# (the project registers no resolver, and CONFIG_LOADER_ARGS' `custom_resolvers` would go through the
# same call), so there is nothing here to migrate: ignore exactly that message, raised from exactly
# that module, until Kedro calls register_resolver(). tests/test_no_deprecation_warnings.py checks that
# loading the project raises no deprecation warning.
warnings.filterwarnings(
    "ignore",
    message=r"register_new_resolver\(\) is deprecated",
    category=UserWarning,
    module=r"kedro\.config\.omegaconf_config",
)

# Parameter blocks are checked first (a misspelled key fails before any data is read).
HOOKS = (ParameterValidationHook(), MlflowTrackingHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `mlflow.yml` holds the tracking settings read by the hook. `globals.yml` of base and of the
    # run's environment (the loader's default pattern) names data_root, raw_root, source, dataset.
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
    # Soft merge: an environment overrides single keys of a base block, and so does a dotted
    # `--params=evaluate.num_beams=50` under `--env=...` (destructive merging dropped the rest of
    # a base-only block there).
    "merge_strategy": {"parameters": "soft"},
}


def project_config(conf_source: str | Path, env: str, kind: str = "parameters") -> dict:
    """The ``parameters`` (or ``catalog``) ``kedro run --env=<env>`` sees (base with the environment
    merged over it), as plain Python values, for code that runs outside a Kedro session."""
    loader = OmegaConfigLoader(str(conf_source), env=env, **CONFIG_LOADER_ARGS)
    return json.loads(json.dumps(loader[kind]))


def project_parameters(conf_source: str | Path, env: str) -> dict:
    """The parameters ``kedro run --env=<env>`` sees (see :func:`project_config`)."""
    return project_config(conf_source, env, "parameters")
