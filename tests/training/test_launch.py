"""The training command line: one process, torchrun on this machine, torchrun across machines."""
from __future__ import annotations

import sys

import pytest

from singer_rec.training.launch import training_command


def test_one_process_on_one_machine_is_plain_python():
    assert training_command("pkg.entry", "cfg.json", 1) == [sys.executable, "-m", "pkg.entry", "--config", "cfg.json"]


def test_several_processes_meet_on_a_free_local_port():
    cmd = training_command("pkg.entry", "cfg.json", 2)
    port = cmd[cmd.index("--master_port") + 1]
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--node_rank", "0",
                   "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port,
                   "-m", "pkg.entry", "--config", "cfg.json"]
    assert 0 < int(port) < 65536


def test_the_rendezvous_settings_reach_torchrun_also_for_one_process_per_machine():
    cmd = training_command("pkg.entry", "cfg.json", 1,
                           {"nnodes": 2, "node_rank": 1, "master_addr": "10.0.0.5", "master_port": 29500})
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1",
                   "--nproc_per_node", "1", "--master_addr", "10.0.0.5", "--master_port", "29500",
                   "-m", "pkg.entry", "--config", "cfg.json"]


@pytest.mark.parametrize("rendezvous, message", [
    ({"nnodes": 2, "master_addr": "10.0.0.5"}, "torchrun.master_port must be set when nnodes > 1"),
    ({"nnodes": 2, "node_rank": 2, "master_port": 29500}, r"torchrun.node_rank must be < nnodes \(2\), got 2"),
    ({"nodes": 2}, r"unknown parameter\(s\) \['torchrun.nodes'\]"),
    ({"master_port": 70000}, "torchrun.master_port must be <= 65535"),
])
def test_bad_rendezvous_settings_name_the_key(rendezvous, message):
    with pytest.raises(ValueError, match=message):
        training_command("pkg.entry", "cfg.json", 1, rendezvous)
