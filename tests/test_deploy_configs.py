"""The cloud and Kubernetes deployment files are accepted by the code that would run them, offline.

- ray-cluster.aws.yaml and ray-cluster.gcp.yaml: Ray's launcher preparation and its JSON schema
  (as tests/test_ray_cluster_yaml.py does for the local one); the AWS file also goes through Ray's
  whole AWS bootstrap (`ray up`'s config step: subnets, security groups, instance profile, key pair)
  against moto's in-process EC2 and IAM, since no cloud account exists here. Both keep the
  install, token and supervisor start of ray-cluster.yaml, line for line.
- deploy/kuberay/raycluster.yaml: the KubeRay v1.7.0 RayCluster CRD's OpenAPI schema (../shared),
  with unknown fields rejected as `kubectl apply` does with strict field validation.
- The sigmaray configs they ship (deploy/cluster.*.yaml): sigmaray's own config loader, a secured
  Kafka, the object-store checkpoint URL of the provider, and no real secret.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, SHARED

CLOUDS = {"aws": ROOT / "ray-cluster.aws.yaml", "gcp": ROOT / "ray-cluster.gcp.yaml"}
LOCAL = ROOT / "ray-cluster.yaml"
# The sigmaray config each cloud's launcher file syncs to ~/sigmaray-cluster.yaml, and its store.
TEMPLATES = {"aws": (ROOT / "deploy/cluster.aws-msk.yaml", "s3://"),
             "gcp": (ROOT / "deploy/cluster.confluent-cloud.yaml", "gs://"),
             "kuberay": (ROOT / "deploy/kuberay/cluster.strimzi.yaml", "s3://")}
RAYCLUSTER = ROOT / "deploy/kuberay/raycluster.yaml"
CRD = SHARED / "kuberay" / "crd-1.7.0" / "ray.io_rayclusters.yaml"
SUPERVISOR_CONFIG = "~/sigmaray-cluster.yaml"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


# --- Ray launcher configs ---------------------------------------------------------------------


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_cloud_config_passes_ray_up_preparation_and_the_launcher_json_schema(cloud: str) -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(CLOUDS[cloud])
    assert raw["provider"]["type"] == cloud
    assert not set(raw) - set(_ray_schema()["properties"]), "keys the launcher does not know"
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)  # ray-schema.json plus Ray's consistency checks (node types, bounds)
    jsonschema.validate(prepared, _ray_schema())


def test_rays_validation_rejects_a_cloud_config_with_a_worker_type_above_the_cluster_bound() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(CLOUDS["aws"])
    raw["available_node_types"]["sigmaray.worker"]["min_workers"] = raw["max_workers"] + 1
    with pytest.raises(ValueError, match="min_workers"):
        validate_config(prepare_config(raw))


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_cloud_config_has_a_head_and_a_worker_type_with_autoscaling_bounds(cloud: str) -> None:
    raw = _load(CLOUDS[cloud])
    types = raw["available_node_types"]
    head = raw["head_node_type"]
    (worker,) = [name for name in types if name != head]
    assert head in types and "min_workers" not in types[head]
    bounds = types[worker]
    assert 1 <= bounds["min_workers"] <= bounds["max_workers"] <= raw["max_workers"]
    assert raw["idle_timeout_minutes"] > 0
    # Every node type starts from the same image, so one install works on all.
    images = {json.dumps(t["node_config"].get("ImageId") or t["node_config"]["disks"][0]["initializeParams"]["sourceImage"])
              for t in types.values()}
    assert len(images) == 1


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_cloud_config_installs_tokens_and_starts_the_supervisor_exactly_as_the_local_one(cloud: str) -> None:
    raw, local = _load(CLOUDS[cloud]), _load(LOCAL)
    for command in local["setup_commands"]:
        assert command in raw["setup_commands"], f"missing from {cloud}: {command}"
    assert raw["head_setup_commands"] == local["head_setup_commands"]  # the Ray token, made on the head
    assert raw["cluster_synced_files"] == local["cluster_synced_files"] == ["~/.ray/auth_token"]
    assert raw["worker_start_ray_commands"] == local["worker_start_ray_commands"]
    assert raw["rsync_exclude"] == local["rsync_exclude"]
    assert raw["file_mounts"]["~/sigmaray"] == "."
    # The head's commands are the local ones but for the config the supervisor reads, which is the
    # user's file (it holds the Kafka password) synced beside the project.
    expected = [c.replace("--config ~/sigmaray/cluster.yaml", f"--config {SUPERVISOR_CONFIG}")
                for c in local["head_start_ray_commands"]]
    assert raw["head_start_ray_commands"] == expected
    assert any(f"sigmaray run --address auto --config {SUPERVISOR_CONFIG}" in c for c in expected)
    assert SUPERVISOR_CONFIG in raw["file_mounts"]
    assert "chmod 600 ~/sigmaray-cluster.yaml" in raw["setup_commands"]


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_cloud_config_points_at_a_template_whose_checkpoints_use_the_providers_object_store(cloud: str) -> None:
    from cluster.config import config_from_dict

    template, scheme = TEMPLATES[cloud]
    text = CLOUDS[cloud].read_text()
    assert str(template.relative_to(ROOT)) in text  # the launcher file says which template to copy
    config = config_from_dict(_load(template), str(template))
    assert config.models.checkpoint_url.startswith(scheme)
    if scheme == "gs://":
        assert "gcsfs==" in text  # the fsspec backend for gs:// is installed on every node


def _with_moto_resources(raw: dict[str, Any], region: str) -> dict[str, Any]:
    """The config with its EDIT values replaced by resources made in moto's account."""
    import boto3

    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    zone = raw["provider"]["availability_zone"].split(",")[0]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    group = ec2.create_security_group(GroupName="sigmaray", Description="sigmaray nodes", VpcId=vpc)["GroupId"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    iam = boto3.client("iam", region_name=region)
    iam.create_role(RoleName="sigmaray-node", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="sigmaray-node")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="sigmaray-node", RoleName="sigmaray-node")
    config = copy.deepcopy(raw)
    for node_type in config["available_node_types"].values():
        node_type["node_config"].update(ImageId=image, SubnetIds=[subnet], SecurityGroupIds=[group],
                                        IamInstanceProfile={"Arn": profile})
    return config


def test_the_aws_config_goes_through_rays_whole_aws_bootstrap_against_moto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from moto import mock_aws
    from ray.autoscaler._private.commands import _bootstrap_config

    raw = _load(CLOUDS["aws"])
    region = raw["provider"]["region"]
    monkeypatch.setenv("HOME", str(tmp_path))  # the launcher writes its key pair to ~/.ssh
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moto")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    with mock_aws():
        config = _with_moto_resources(raw, region)
        placeholders = config["available_node_types"]["sigmaray.worker"]["node_config"]
        prepared = _bootstrap_config(copy.deepcopy(config), no_config_cache=True)
        worker = prepared["available_node_types"]["sigmaray.worker"]["node_config"]
        assert worker["SubnetIds"] == placeholders["SubnetIds"]
        assert worker["IamInstanceProfile"] == placeholders["IamInstanceProfile"]  # ours, not Ray's default
        assert worker["KeyName"].startswith("ray-autoscaler")  # the launcher made its key pair
        assert Path(prepared["auth"]["ssh_private_key"]).is_relative_to(tmp_path)
        assert prepared["auth"]["ssh_user"] == "admin"  # Debian's AMI user

        # And Ray's AWS checks are real: the file as shipped names resources no account has.
        capsys.readouterr()
        with pytest.raises(AssertionError):
            _bootstrap_config(copy.deepcopy(raw), no_config_cache=True)
        shown = capsys.readouterr()
        assert "SecurityGroupIds" in shown.out + shown.err + caplog.text


# --- sigmaray configs for secured, managed Kafka ----------------------------------------------


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_shipped_cluster_configs_load_and_use_sasl_over_tls_without_a_real_secret(name: str) -> None:
    from cluster.config import config_from_dict

    path, _scheme = TEMPLATES[name]
    config = config_from_dict(_load(path), str(path))
    client = config.kafka.client
    assert client["security.protocol"] == "SASL_SSL"
    assert client["sasl.mechanism"] in ("SCRAM-SHA-512", "PLAIN")
    assert "sasl.password" not in client  # no secret in the file: it comes from the environment
    assert config.kafka.client_env == {"sasl.password": "SIGMARAY_KAFKA_PASSWORD"}
    assert client["ssl.ca.location"]
    assert config.kafka.replication_factor == 3 and config.ray.actor_cpus == 1


def test_the_confluent_cloud_config_is_sasl_plain_and_the_msk_one_scram_on_port_9096() -> None:
    confluent = _load(TEMPLATES["gcp"][0])["kafka"]
    assert confluent["client"]["sasl.mechanism"] == "PLAIN"
    assert confluent["bootstrap_servers"].endswith(".confluent.cloud:9092")
    msk = _load(TEMPLATES["aws"][0])["kafka"]
    assert msk["client"]["sasl.mechanism"] == "SCRAM-SHA-512"
    assert all(server.endswith(":9096") for server in msk["bootstrap_servers"].split(","))


# --- KubeRay ----------------------------------------------------------------------------------


def _crd_schema() -> dict[str, Any]:
    crd = _load(CRD)
    assert crd["spec"]["names"]["kind"] == "RayCluster"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever Kubernetes would prune them: an object that
    lists its properties and neither keeps unknown fields nor maps arbitrary keys. (The API server
    drops such fields silently; `kubectl apply` with strict field validation refuses them.)"""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator() -> Any:
    import jsonschema

    schema = _strict(_crd_schema())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _validate(manifest: dict[str, Any]) -> None:
    _validator().validate(manifest)


def test_the_kuberay_manifest_is_valid_against_the_raycluster_crd_schema() -> None:
    manifest = _load(RAYCLUSTER)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    _validate(manifest)


def test_the_crd_schema_check_rejects_a_misspelled_field_and_a_wrongly_typed_value() -> None:
    import jsonschema

    misspelled = _load(RAYCLUSTER)
    misspelled["spec"]["workerGroupSpec"] = misspelled["spec"].pop("workerGroupSpecs")
    with pytest.raises(jsonschema.ValidationError, match="workerGroupSpec"):
        _validate(misspelled)
    wrong_type = _load(RAYCLUSTER)
    wrong_type["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "six"
    with pytest.raises(jsonschema.ValidationError, match="six"):
        _validate(wrong_type)
    bad_mode = _load(RAYCLUSTER)
    bad_mode["spec"]["authOptions"]["mode"] = "password"
    with pytest.raises(jsonschema.ValidationError, match="password"):
        _validate(bad_mode)


def _pinned_ray() -> str:
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [d for d in dependencies if d.startswith("ray[")]
    return ray.split("==")[1]


def test_the_kuberay_cluster_runs_the_supervisor_on_the_head_with_token_auth_and_bounded_workers() -> None:
    manifest = _load(RAYCLUSTER)
    spec = manifest["spec"]
    assert spec["rayVersion"] == _pinned_ray()
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["upgradeStrategy"]["type"] == "Recreate"  # a new image replaces the pods (docs/operations.md)
    (group,) = spec["workerGroupSpecs"]
    assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    (container,) = head["template"]["spec"]["containers"]
    script = container["lifecycle"]["postStart"]["exec"]["command"][-1]
    assert "--submission-id sigmaray-supervisor" in script
    assert "sigmaray run --address auto --config /etc/sigmaray/cluster.yaml" in script
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in head["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/sigmaray"]]["secret"]["secretName"] == "sigmaray-config"  # it holds a password
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["image"] == container["image"]
    assert worker["workingDir"] == container["workingDir"] == "/opt/sigmaray"
    # The hook is one bash script: it must at least parse.
    assert subprocess.run(["bash", "-n", "-c", script], check=False).returncode == 0
    # The config it names is the Strimzi template's shape: rules inside the image.
    strimzi = _load(TEMPLATES["kuberay"][0])
    assert all(path.startswith("/opt/sigmaray/") for path in strimzi["rules"]["paths"])
    assert strimzi["kafka"]["client"]["ssl.ca.location"].startswith("/etc/sigmaray/")
