"""``data.num_workers``: ``auto`` by default, resolved for the device (loader processes on a GPU, none on the CPU).

It defaulted to 0: a config without the key made every batch in the main process between GPU steps, which left an
H200 waiting 94 % of the time (BENCHMARKS.md, issue #7). The count never changes what is trained (a batch is a
function of seed, step and rank), so a resume with another count does not warn about a changed data section.

Real data: the MNI ICBM152 T1 under ``sample_data/`` (conftest's tiny configs).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from conftest import merge_sections, tiny_sr_config, write_yaml

from medgan.errors import ConfigError
from medgan.train.cgan_config import load_cgan_config
from medgan.train.config import load_config
from medgan.train.core import MAX_AUTO_WORKERS, loader_workers

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def test_num_workers_defaults_to_auto_and_takes_a_count_or_auto(tmp_path):
    cfg = yaml.safe_load(tiny_sr_config(tmp_path).read_text())
    cfg["data"].pop("num_workers", None)
    assert load_config(write_yaml(tmp_path, cfg, "a.yaml"))["data"]["num_workers"] == "auto"
    for good in (0, 3, "auto"):
        path = write_yaml(tmp_path, merge_sections(cfg, {"data": {"num_workers": good}}), "b.yaml")
        assert load_config(path)["data"]["num_workers"] == good
    for bad, said in ((-1, "must be >= 0 or auto, got -1"), ("many", 'expected an integer or "auto"')):
        path = write_yaml(tmp_path, merge_sections(cfg, {"data": {"num_workers": bad}}), "c.yaml")
        with pytest.raises(ConfigError, match="data.num_workers") as info:
            load_config(path)
        assert said in str(info.value)


def test_cgan_num_workers_defaults_to_auto(tmp_path):
    from conftest import tiny_cgan_config

    cfg = yaml.safe_load(tiny_cgan_config(tmp_path).read_text())
    cfg["data"].pop("num_workers", None)
    assert load_cgan_config(write_yaml(tmp_path, cfg, "g.yaml"))["data"]["num_workers"] == "auto"


def test_auto_is_no_worker_on_the_cpu_and_this_process_share_of_the_cores_on_a_gpu(monkeypatch):
    assert loader_workers("auto", torch.device("cpu")) == 0
    assert loader_workers(2, torch.device("cpu")) == 2  # a count is taken as it is, on any device
    cuda = torch.device("cuda", 0)  # only the device type is read: no GPU needed
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers("auto", cuda) == max(0, min(MAX_AUTO_WORKERS, _cores() - 1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: two processes on this host share its cores
    assert loader_workers("auto", cuda) == max(0, min(MAX_AUTO_WORKERS, _cores() // 2 - 1))
    assert loader_workers(5, cuda) == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "two")  # not torchrun's: taken as one process, not a ValueError
    assert loader_workers("auto", cuda) == max(0, min(MAX_AUTO_WORKERS, _cores() - 1))


def test_summary_records_the_workers_and_a_resume_with_another_count_does_not_warn(tmp_path, caplog):
    from medgan.train.trainer import train_sr

    cfg = yaml.safe_load(tiny_sr_config(tmp_path).read_text())
    cfg["data"]["num_workers"] = 0
    cfg["train"].update(val_every=0, checkpoint_every=1)
    path = write_yaml(tmp_path, cfg, "sr.yaml")
    first = train_sr(path, until_step=1, progress=False)
    assert first.step == 1
    cfg["data"]["num_workers"] = "auto"
    write_yaml(tmp_path, cfg, "sr.yaml")
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        done = train_sr(path, progress=False)
    assert done.finished and done.resumed_from is not None
    assert not any("changed since" in r.getMessage() for r in caplog.records)
    summary = json.loads((Path(load_config(path)["out_dir"]) / "summary.json").read_text())
    assert summary["speed_options"]["loader_workers"] == 0  # auto on the CPU

    cfg["data"]["foreground_ratio"] = 0.5  # a key that changes the batches still warns
    cfg["train"]["checkpoint_every"] = 1
    write_yaml(tmp_path, cfg, "sr.yaml")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan.train.core"):
        train_sr(path, progress=False)
    assert any("config section 'data' changed" in r.getMessage() for r in caplog.records)
