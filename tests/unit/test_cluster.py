"""Cluster files: schema, address forms, per-kind fields, resource and storage resolution."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sweeper.config.cluster import (
    ClusterConfig,
    address_kind,
    default_local_cluster,
    resolve_resources,
    resolve_storage,
)
from sweeper.config.loader import load_cluster
from sweeper.config.recipe import Recipe, ResourcesConfig
from sweeper.errors import InputError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def cluster_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(InputError) as info:
        load_cluster(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "c.yaml") in message
    return message


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("ray://head:10001", "client"),
        ("http://10.0.0.1:8265", "jobs"),
        ("https://ray.example.com", "jobs"),
        ("https://ray.example.com/proxy/ray", "jobs"),
        ("head-0.cluster.local:6379", "gcs"),
        ("[::1]:6379", "gcs"),
    ],
)
def test_address_forms(address: str, kind: str) -> None:
    assert address_kind(address) == kind
    cluster = ClusterConfig(name="c", kind="ray", address=address)
    assert cluster.address_kind == kind


@pytest.mark.parametrize(
    "address", ["head", "ray://head", "tcp://head:1", "head:0", "head:99999", "http://", "auto"]
)
def test_bad_addresses(tmp_path: Path, address: str) -> None:
    msg = cluster_error(tmp_path, f"name: c\nkind: ray\naddress: '{address}'\n")
    assert "address:" in msg and "ray://host:10001" in msg


def test_local_defaults() -> None:
    local = default_local_cluster()
    assert (local.kind, local.num_cpus, local.num_gpus, local.temp_dir) == ("local", None, 0, None)
    assert local.address_kind is None and local.auth_token() is None
    assert local.summary().startswith("cluster local: local Ray, all CPUs")


def test_ray_cluster_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = ClusterConfig(
        name="c", kind="ray", address="http://h:8265", auth_token_env="MY_TOKEN"
    )
    monkeypatch.delenv("MY_TOKEN", raising=False)
    assert cluster.auth_token() is None
    monkeypatch.setenv("MY_TOKEN", "abc")
    assert cluster.auth_token() == "abc"
    assert "token from $MY_TOKEN" in cluster.summary()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: c\nkind: ray\n", "address: required for kind ray"),
        ("name: c\nkind: local\naddress: 'h:6379'\n", "address: not used by kind local"),
        ("name: c\nkind: ray\naddress: 'h:6379'\nnum_cpus: 4\n", "num_cpus: not used by kind ray"),
        ("name: c\nkind: slurm\n", "kind: Input should be 'local' or 'ray'"),
        ("name: c\nkind: local\nnum_cpu: 4\n", "num_cpu: unknown key (valid keys: name, kind"),
        (
            "name: c\nkind: local\nresources: {num_gpu: 1}\n",
            "resources.num_gpu: unknown key (valid keys: num_cpus, num_gpus, custom)",
        ),
        ("name: c\nkind: local\nnum_gpus: -1\n", "num_gpus: Input should be greater than"),
        ("name: c\nkind: local\nkind: ray\n", "duplicate key 'kind'"),
        ("name: c\nkind: [local\n", "YAML error"),
    ],
)
def test_bad_cluster_files(tmp_path: Path, text: str, expected: str) -> None:
    msg = cluster_error(tmp_path, text)
    assert expected in msg, msg


def test_missing_cluster_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_cluster(str(tmp_path / "none.yaml"))


def test_load_full_ray_cluster(tmp_path: Path) -> None:
    cluster = load_cluster(
        write(
            tmp_path,
            """\
            name: gpu
            kind: ray
            address: ray://head:10001
            runtime_env: {pip: [sweeper], env_vars: {A: "1"}}
            storage: s3://bucket/sweeps
            resources: {num_cpus: 2, num_gpus: 0.25, custom: {a100: 1}}
            """,
        )
    )
    assert cluster.runtime_env == {"pip": ["sweeper"], "env_vars": {"A": "1"}}
    assert cluster.resources == ResourcesConfig(num_cpus=2, num_gpus=0.25, custom={"a100": 1})
    assert cluster.auth_token_env == "RAY_AUTH_TOKEN"


def test_resolve_resources_recipe_wins() -> None:
    cluster = ClusterConfig(
        name="c", kind="ray", address="h:6379", resources={"num_cpus": 4, "num_gpus": 1}
    )
    plain = Recipe.model_validate({"name": "r"})
    assert resolve_resources(plain, cluster) == ResourcesConfig(num_cpus=4, num_gpus=1)
    own = Recipe.model_validate({"name": "r", "run": {"resources": {"num_gpus": 0.5}}})
    assert resolve_resources(own, cluster) == ResourcesConfig(num_cpus=1, num_gpus=0.5)
    assert resolve_resources(plain, default_local_cluster()) == ResourcesConfig()
    assert resolve_resources(plain, None) == ResourcesConfig()


def test_resolve_storage_order() -> None:
    cluster = ClusterConfig(name="c", kind="ray", address="h:6379", storage="s3://b/s")
    plain = Recipe.model_validate({"name": "r"})
    own = Recipe.model_validate({"name": "r", "run": {"storage": "/data/sweeps"}})
    assert resolve_storage(plain, None) == os.path.abspath("sweeps")  # made absolute here
    assert resolve_storage(plain, cluster) == "s3://b/s"
    assert resolve_storage(own, cluster) == "/data/sweeps"
    assert resolve_storage(own, cluster, cli_storage="/tmp/x") == "/tmp/x"
