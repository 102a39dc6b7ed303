"""The rollout-engine part of the job config (torch-free): the ``vllm`` options block,
``rollout_correction``, and the one-line error (exit 2) for ``engine: vllm`` without vLLM."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.config.job import RLVRJob, VLLMConfig, check_engine_installed
from sweeper.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """This environment, as if vLLM were not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )


def test_vllm_block_defaults_and_bounds() -> None:
    job = RLVRJob.model_validate({"engine": "vllm"})
    assert job.vllm == VLLMConfig()
    assert job.vllm.gpu_memory_utilization is None and job.vllm.dtype == "auto"
    assert job.rollout_correction is None  # TIS is off by default
    opts = VLLMConfig(gpu_memory_utilization=0.3, max_model_len=1024, block_size=32)
    assert opts.block_size == 32
    for bad, needle in [
        ({"block_size": 40}, "multiple of 16"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_model_len": 4}, "max_model_len"),
        ({"gpu_mem": 0.5}, "gpu_mem"),
    ]:
        with pytest.raises(ValidationError, match=needle):
            VLLMConfig.model_validate(bad)


def test_rollout_correction_needs_an_engine_with_its_own_weights() -> None:
    job = RLVRJob.model_validate({"engine": "vllm", "rollout_correction": {"kind": "tis"}})
    assert job.rollout_correction is not None and job.rollout_correction.cap == 2.0
    with pytest.raises(ValidationError, match="rollout_correction needs an engine"):
        RLVRJob.model_validate({"engine": "hf", "rollout_correction": {"kind": "tis"}})
    with pytest.raises(ValidationError, match="cap"):
        RLVRJob.model_validate({"engine": "vllm", "rollout_correction": {"cap": 0.5}})


def test_check_engine_installed(no_vllm) -> None:
    check_engine_installed(RLVRJob.model_validate({"engine": "hf"}))
    with pytest.raises(InputError, match=r"^r.yaml: job.engine: vllm is not installed here \("):
        check_engine_installed(RLVRJob.model_validate({"engine": "vllm"}), "r.yaml")


def _vllm_recipe(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    data["job"]["engine"] = "vllm"
    path = tmp_path / "vllm.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_validate_and_local_run_without_vllm_exit_2_with_one_line(tmp_path, no_vllm) -> None:
    path = _vllm_recipe(tmp_path)
    storage = tmp_path / "sweeps"
    for command in (["validate", str(path)], ["run", str(path), "--storage", str(storage)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "pip install 'sweeper[vllm]'" in lines[0], result.output
    assert not storage.exists()  # nothing written


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")
def test_validate_passes_with_vllm_installed(tmp_path) -> None:
    result = CliRunner().invoke(app, ["validate", str(_vllm_recipe(tmp_path))])
    assert result.exit_code == 0, result.output
