"""Device and autocast defaults that follow the machine: ``auto`` is CUDA (bf16 autocast, TF32) where a
GPU is, and exactly the CPU in float32 elsewhere. Both branches without a GPU: ``torch.cuda`` patched."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from singer_rec.training import common

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tf32_flags():
    """Restores the TF32 flags a test's CUDA branch turns on (a CPU build keeps them as plain flags)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def fake_cuda(monkeypatch, tf32_flags):
    """A machine with CUDA (2 GPUs, current 0) as far as the device helpers ask."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


@pytest.fixture
def no_cuda(monkeypatch, tf32_flags):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_accepted(name):
    assert common.check_device_name(name, "x.device") == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:a", "cuda0", "mps", "", None, 0])
def test_wrong_device_names_name_the_key(name):
    with pytest.raises(ValueError, match=r"sdpo\.train\.device must be one of auto, cpu, cuda, cuda:N, got "):
        common.check_device_name(name, "sdpo.train.device")


def test_auto_is_the_cpu_without_cuda_and_leaves_tf32_alone(no_cuda):
    assert common.resolve_device("auto") == torch.device("cpu")
    assert common.resolve_device("cpu") == torch.device("cpu")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    with pytest.raises(ValueError, match=r"evaluate\.device is 'cuda', but CUDA is not available"):
        common.resolve_device("cuda", "evaluate.device")
    with pytest.raises(ValueError, match=r"embed\.device must be one of"):
        common.resolve_device("gpu", "embed.device")


def test_auto_is_cuda_with_tf32_where_a_gpu_is(fake_cuda):
    assert common.resolve_device("auto") == torch.device("cuda", 0)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert common.resolve_device("cuda") == torch.device("cuda", 0)
    assert common.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert common.resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)
    assert common.resolve_device("cpu") == torch.device("cpu")


def test_init_distributed_uses_the_same_helper(fake_cuda, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert common.init_distributed("auto").device == torch.device("cuda", 0)
    assert common.init_distributed("cuda:1").device == torch.device("cuda", 1)  # one process: GPU N
    assert fake_cuda == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert common.init_distributed("cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device must be one of auto, cpu, cuda, cuda:N, got 'gpu'"):
        common.init_distributed("gpu")


def test_init_distributed_on_a_cpu(no_cuda, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = common.init_distributed("auto")
    assert (dist.device, dist.world_size, dist.enabled) == (torch.device("cpu"), 1, False)


def test_autocast_auto_is_bf16_on_a_capable_gpu_and_float32_on_any_cpu(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert common.autocast_dtype(cpu, "auto") is None
    # even a CPU with native bf16 keeps float32 under auto: bf16 there only when asked for
    monkeypatch.setattr(common, "cpu_supports_bf16", lambda: True)
    assert common.autocast_dtype(cpu, "auto") is None
    assert common.autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert common.autocast_dtype(cpu, "off") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert common.autocast_dtype(gpu, "auto") is torch.bfloat16
    assert common.autocast_dtype(gpu, "off") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert common.autocast_dtype(gpu, "auto") is None  # e.g. a V100: float32
    assert common.autocast_dtype(gpu, "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="autocast must be 'auto', 'bf16' or 'off', got 'fp16'"):
        common.autocast_dtype(cpu, "fp16")


def test_autocast_auto_on_a_cpu_computes_exactly_float32():
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(16, 8), torch.randn(4, 16)
    cpu = torch.device("cpu")
    with common.autocast(cpu, common.autocast_dtype(cpu, "auto")):
        auto = layer(x)
    assert auto.dtype == torch.float32 and torch.equal(auto, layer(x))


def _base(stage: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / f"conf/base/parameters_{stage}.yml").read_text())[stage]


def test_every_torch_stage_defaults_to_auto():
    from singer_rec.pipelines.baselines.nodes import BaselinesParams
    from singer_rec.pipelines.embed.nodes import EmbedParams
    from singer_rec.pipelines.evaluate.nodes import EvaluateParams
    from singer_rec.pipelines.llm_baselines.nodes import LLMBaselinesParams
    from singer_rec.training.rl.settings import RLSettings
    from singer_rec.training.sdpo import SDPOSettings

    for cls in (EvaluateParams, EmbedParams, BaselinesParams, LLMBaselinesParams, SDPOSettings):
        assert cls.__dataclass_fields__["device"].default == "auto", cls
    for cls in (EvaluateParams, LLMBaselinesParams, SDPOSettings, RLSettings):
        assert cls.__dataclass_fields__["autocast"].default == "auto", cls
    assert EmbedParams.__dataclass_fields__["dtype"].default == "auto"
    # and the project's conf says the same
    assert {(s, _base(s)["device"]) for s in ("evaluate", "embed", "baselines", "llm_baselines", "rl")} == {
        (s, "auto") for s in ("evaluate", "embed", "baselines", "llm_baselines", "rl")}
    assert _base("sdpo")["train"]["device"] == _base("sft")["train"]["device"] == "auto"
    assert (_base("evaluate")["autocast"], _base("llm_baselines")["autocast"], _base("rl")["settings"]["autocast"],
            _base("sdpo")["train"]["autocast"], _base("sft")["train"]["autocast"], _base("embed")["dtype"]) == ("auto",) * 6


@pytest.mark.parametrize("block,values,key", [
    ("embed", {"device": "gpu"}, "embed.device"),
    ("baselines", {"device": "gpu"}, "baselines.device"),
    ("llm_baselines", {"device": "gpu"}, "llm_baselines.device"),
    ("sdpo", {"train": {"device": "gpu"}}, "sdpo.train.device"),
    ("evaluate", {"device": "gpu"}, "evaluate.device"),
    ("rl", {"settings": {}, "device": "gpu"}, "rl.device"),
])
def test_stage_blocks_name_a_wrong_device(block, values, key):
    from singer_rec.params import from_params
    from singer_rec.pipeline_registry import parameter_schema

    with pytest.raises(ValueError, match=rf"{key.replace('.', r'[.]')} must be one of auto, cpu, cuda, cuda:N, got 'gpu'"):
        from_params(parameter_schema(block), values, block)
