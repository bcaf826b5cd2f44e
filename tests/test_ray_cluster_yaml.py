"""ray-cluster.yaml is a config Ray's own launcher accepts, and it installs and starts sigmaray."""

from __future__ import annotations

import copy

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.config import load_config
from tests.conftest import ROOT


def _config() -> dict:
    return yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())


def test_ray_cluster_yaml_passes_rays_own_validation() -> None:
    config = _config()
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["provider"]["type"] == "local"


def test_ray_cluster_yaml_mounts_installs_and_starts_the_supervisor() -> None:
    config = _config()
    assert config["file_mounts"] == {"~/sigmaray": "."}
    assert any("scripts/setup.sh" in c for c in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head
    assert "sigmaray run --address auto --config cluster.yaml" in head
    assert all(".venv/bin/ray" in c for c in config["worker_start_ray_commands"] if "ray " in c)


def test_the_cluster_config_it_starts_with_is_valid() -> None:
    config = load_config(ROOT / "cluster.yaml")
    assert config.rules.topic == "sigmaray.rules" and config.workers == 2


def test_rays_validation_would_catch_a_broken_launcher_config() -> None:
    import pytest

    broken = _config()
    broken["provider"] = {"type": "local"}  # no head_ip
    broken["setup_comands"] = []  # misspelled key
    with pytest.raises(Exception):
        validate_config(prepare_config(broken))
