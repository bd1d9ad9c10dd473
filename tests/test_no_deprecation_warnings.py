"""What every ``kedro run`` does first (bootstrap the project, create the session, load its context:
settings, parameters, catalog) raises no deprecation warning that the project causes."""
import os
import subprocess
import sys

from conftest import PROJECT_ROOT

# Run in a fresh interpreter: the warning filters are then the process's own, as on `kedro run`
# (pytest's per-test filters would hide or reorder them), and settings.py is imported anew.
LOAD_PROJECT = r"""
import sys
import warnings
from pathlib import Path

# Deprecations raised from the project's modules or from Kedro (which warns about a project's
# settings and configuration) are errors; so is the one Kedro 1.7.0's config loader triggers in
# omegaconf 2.4 (a UserWarning, raised from Kedro's module), which settings.py filters out.
for category in (DeprecationWarning, FutureWarning):
    warnings.filterwarnings("error", category=category, module=r"(singer_rec|kedro)(\.|$)")
warnings.filterwarnings("error", message=r".*\bdeprecated\b", category=UserWarning, module=r"kedro(\.|$)")

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

root = Path(sys.argv[1])
bootstrap_project(root)
with KedroSession.create(project_path=root) as session:
    context = session.load_context()
    print("parameters:", len(context.params), "datasets:", len(context.catalog.keys()))
"""


def test_loading_the_project_raises_no_deprecation_warning():
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1")
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-c", LOAD_PROJECT, str(PROJECT_ROOT)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "parameters:" in proc.stdout
