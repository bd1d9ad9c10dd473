"""`kedro run --config=conf/paper_gpu.yml` on the CPU: the paper's GPU setting, wired as a user runs it
(hf preset, sentence-transformers embeddings, device/dtype auto), on the synthetic demo with a tiny
Qwen2.5-shaped model and a few steps per stage, so that the config cannot rot without a GPU."""
import json
import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from test_end_to_end import _kedro, _latest, _project_copy

pytestmark = pytest.mark.slow

PAPER = "conf/paper_gpu.yml"
# the paper's config with every stage on the CPU and caps that keep the run to a couple of minutes
CPU_CAPS = (
    "embed.device=cpu", "sft.train.device=cpu", "rl.device=cpu", "evaluate.device=cpu",
    "sft.train.max_steps=2", "sft.train.batch_size=16", "sft.train.micro_batch_size=16",
    "sft.train.valid_ranking_rows=16", "sft.train.max_valid_samples=16", "sft.train.num_threads=1",
    "rl.settings.max_steps=1", "rl.settings.batch_size=2", "rl.settings.micro_batch_size=32",
    "rl.settings.rollout_batch_size=2", "rl.settings.probe_prompts=2", "rl.settings.num_threads=1",
    "evaluate.max_rows=16", "evaluate.valid_max_rows=16",
)


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """A two-layer Qwen2.5-shaped LLM folder (padded, tied vocabulary) and the offline MiniLM
    sentence-transformers folder standing in for the Qwen3 embedding model."""
    from singer_rec.shaped_models import write_qwen25_folder
    from singer_rec.sid.encoders import minilm_model_path

    llm = write_qwen25_folder(tmp_path_factory.mktemp("models") / "llm", "tiny")
    return llm, minilm_model_path()


def test_paper_config_runs_sft_rl_evaluate_on_the_cpu(tmp_path, model_folders):
    llm, embedding = model_folders
    root = _project_copy(tmp_path)
    params = ",".join((f"llm_path={llm}", f"embedding_path={embedding}", *CPU_CAPS))
    _kedro(root, "run", f"--config={PAPER}", f"--params={params}", timeout=900)
    data = root / "data" / "demo"
    meta = json.loads((_latest(data / "06_models" / "sft_model") / "singer.json").read_text())
    assert meta["preset"] == "hf"
    for model in ("sft", "rl"):
        metrics = json.loads((data / "08_reporting" / model / "test_metrics.json").read_text())
        assert metrics["n"] == 16 and 0.0 <= metrics["NDCG@10"] <= metrics["HR@10"] <= 1.0
        assert (data / "08_reporting" / model / "valid_metrics.json").exists()


def test_paper_config_without_llm_path_stops_before_reading_data(tmp_path):
    root = _project_copy(tmp_path)
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "kedro", "run", "--env=industrial", f"--config={PAPER}",
                           "--params=embedding_path=/models/Qwen3-Embedding-0.6B"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "Missing mandatory value: llm_path" in output, output[-3000:]
    assert "Running node" not in output
    assert not (root / "data").exists() and not (root / "mlflow.db").exists()
    assert (PROJECT_ROOT / PAPER).exists()
