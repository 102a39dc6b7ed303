"""Every shipped recipe and cluster file validates (or, for files that are not sweeper's, is
recognised and passes its light check), and each says in a header what it is and how to run it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from sweeper.config.files import validate_path
from sweeper.config.loader import load_cluster, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
CLUSTERS = sorted((ROOT / "clusters").iterdir())


def test_expected_files_are_shipped() -> None:
    assert {p.name for p in RECIPES} >= {
        "quickstart.yaml",
        "nsr_optuna.yaml",
        "cov_thresholds.yaml",
    }
    assert {p.name for p in CLUSTERS} >= {
        "local.yaml",
        "address.yaml",
        "ray-launcher-gpu.yaml",
        "kuberay.yaml",
        "slurm.sh",
    }


@pytest.mark.parametrize("path", RECIPES + CLUSTERS, ids=lambda p: p.name)
def test_file_has_a_header_saying_how_to_run_it(path: Path) -> None:
    lines = path.read_text().splitlines()
    start = 1 if lines[0].startswith("#!") else 0
    header = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 3, f"{path.name}: needs a comment header"
    assert re.search(r"\b(sweeper|sbatch|kubectl|ray up)\b", "\n".join(header)), path.name


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path: Path) -> None:
    recipe, text = load_recipe(str(path))
    assert text == path.read_text()
    assert recipe.name == path.stem
    summary = validate_path(str(path))
    assert summary.startswith(f"recipe {recipe.name}: ")
    assert recipe.job.clipping_can_act
    for point in recipe.grid_points() if recipe.search.kind == "grid" else []:
        recipe.job_for(point)


def test_quickstart_is_what_the_readme_promises() -> None:
    recipe, _ = load_recipe(str(ROOT / "recipes" / "quickstart.yaml"))
    job = recipe.job
    assert (job.kind, job.policy.name, job.task.kind, job.task.digits) == (
        "rlvr",
        "tiny",
        "addition",
        2,
    )
    assert job.loss.kind == "ppo_clip" and job.mini_batches == 4
    assert job.clipping_can_act and job.eval.samples == 8  # mean@8, as its header says
    assert recipe.search.kind == "grid" and recipe.search.seeds == [0, 1]
    assert recipe.param_keys() == ["loss.eps_low", "loss.eps_high"]
    assert len(recipe.grid_points()) == 4 and recipe.n_jobs() == 8
    assert (recipe.objective.metric, recipe.objective.scope) == ("mean_at_n", "last")


def test_nsr_optuna_shape() -> None:
    recipe, _ = load_recipe(str(ROOT / "recipes" / "nsr_optuna.yaml"))
    assert recipe.search.kind == "optuna" and recipe.search.sampler == "tpe"
    assert recipe.search.pruner is not None and recipe.search.pruner.kind == "median"
    assert recipe.space["loss.rescue_prob"].type == "log_uniform"
    assert recipe.space["loss.rescue_margin"].type == "log_uniform"
    assert recipe.job.loss.kind == "nsr"


def test_header_commands_with_set_work() -> None:
    """The --set examples in recipe headers are valid overrides."""
    checked: list[list[str]] = []
    for path in RECIPES:
        header = "\n".join(
            line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#")
        ).replace("\\\n", " ")
        for command in re.findall(r"sweeper run (\S+\.yaml)((?:\s+--set \S+)+)", header):
            recipe_path, sets = command
            overrides = shlex.split(sets)[1::2]
            recipe, _ = load_recipe(str(ROOT / recipe_path), overrides)
            assert recipe.n_jobs() >= 1
            checked.append(overrides)
    assert any("job.loss.kind=kl_cov" in o for o in checked), checked


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("local.yaml", "cluster local: local Ray"),
        ("address.yaml", "cluster gpu-cluster: ray at http://"),
        ("ray-launcher-gpu.yaml", "Ray cluster-launcher config sweeper-gpu"),
        ("kuberay.yaml", "KubeRay RayCluster sweeper"),
        ("slurm.sh", "SLURM batch script slurm.sh"),
    ],
)
def test_cluster_files_validate_or_are_recognised(name: str, start: str) -> None:
    assert validate_path(str(ROOT / "clusters" / name)).startswith(start)


def test_sweeper_cluster_files_load() -> None:
    assert load_cluster(str(ROOT / "clusters" / "local.yaml")).kind == "local"
    address = load_cluster(str(ROOT / "clusters" / "address.yaml"))
    assert address.address_kind == "jobs" and address.resources.num_gpus == 0.5


def test_slurm_script_syntax_and_generated_cluster_file(tmp_path: Path) -> None:
    script = (ROOT / "clusters" / "slurm.sh").read_text()
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(ROOT / "clusters" / "slurm.sh")], check=True)
    # The cluster file it writes for the allocation is a valid sweeper cluster file.
    body = re.search(r"<<YAML\n(.*?)\nYAML\n", script, re.S)
    assert body is not None
    text = (
        body.group(1)
        .replace("$SLURM_JOB_ID", "123")
        .replace("$ADDRESS", "10.0.0.5:6379")
        .replace("$SLURM_SUBMIT_DIR", "/home/u")
    )
    path = tmp_path / "slurm.cluster.yaml"
    path.write_text(text)
    cluster = load_cluster(str(path))
    assert (cluster.name, cluster.address_kind) == ("slurm-123", "gcs")
