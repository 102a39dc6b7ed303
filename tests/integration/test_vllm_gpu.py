"""The vLLM engine on CUDA in bfloat16 (skipped without a GPU or without vLLM).

Run on a GPU machine with vLLM installed (``pip install -e ".[vllm]"``)::

    pytest -q -m gpu tests/integration/test_vllm_gpu.py

Written without a GPU to run it on (none was available to this project's sessions so far).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sweeper.config.job import RLVRJob
from sweeper.rl.job import JobRunner, row_keys

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

JOB = {
    "steps": 4,
    "device": "cuda",
    "policy": {"dtype": "bfloat16"},
    "prompts_per_step": 8,
    "group_size": 4,
    "mini_batches": 2,
    "lr": 1e-4,
    "engine": "vllm",
    # eager: no CUDA-graph capture, so the test starts in seconds
    "vllm": {"max_model_len": 128, "enforce_eager": True},
    "rollout_correction": {"kind": "tis", "cap": 2.0},
    "eval": {"every": 2, "prompts": 16, "samples": 4, "ks": [1, 4]},
}


def test_vllm_job_on_cuda_bf16_with_half_a_gpu(tmp_path) -> None:
    runner = JobRunner(cache_dir=tmp_path, gpu_fraction=0.5)
    try:
        rows = list(runner.run(JOB, seed=0))
        engine = runner.warm_engine
        # vLLM's memory share follows the job's GPU fraction: half of the default 0.5.
        cache = engine.llm.llm_engine.vllm_config.cache_config
        assert cache.gpu_memory_utilization == pytest.approx(0.25)
        assert engine.llm.llm_engine.model_config.dtype == torch.bfloat16
        # A second job of the same base reuses the engine.
        again = list(runner.run(JOB, seed=0))
        assert runner.engine_setup["built"] is False and runner.warm_engine is engine
    finally:
        runner.close()
    keys = row_keys(RLVRJob.model_validate(JOB))
    for row in rows:
        assert list(row) == keys
    for row in rows[:-1]:
        assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
        # bf16 engine vs bf16 trainer: small, not zero
        assert 0.0 <= row["rollout_logp_diff_mean"] < 0.05, row["rollout_logp_diff_mean"]
        assert row["rollout_logp_diff_mean"] <= row["rollout_logp_diff_max"]
    assert rows[0]["reward_mean"] == again[0]["reward_mean"]  # the base, the same seed


def test_two_vllm_jobs_packed_on_one_gpu(tmp_path) -> None:
    """num_gpus 0.5: two workers share the GPU at once, each with its own in-process engine
    (no ports to collide on), each taking a quarter of the memory."""
    ray = pytest.importorskip("ray")
    from sweeper.config.loader import load_recipe
    from sweeper.controller import Controller
    from sweeper.store import SweepStore, manifest

    data = {
        "name": "packed",
        "job": {**JOB, "kind": "rlvr", "steps": 6},
        "space": {"loss.eps_high": [0.2, 0.28]},
        "search": {"kind": "grid", "seeds": 1, "max_concurrent": 2},
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {
            "storage": str(tmp_path / "sweeps"),
            "max_retries": 0,
            "resources": {"num_cpus": 1, "num_gpus": 0.5},
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe, text = load_recipe(str(path))
    store = SweepStore.create(recipe.run.storage, recipe.name, text, recipe.resolved(), manifest())
    cache = Path(tmp_path / "cache")
    JobRunner(cache_dir=cache).policy(
        RLVRJob.model_validate(JOB), torch.device("cuda")
    )  # warm start once
    ray_temp = tempfile.mkdtemp(prefix="swp-", dir="/tmp")
    ray.init(
        address="local",
        _temp_dir=ray_temp,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=2,
        num_gpus=1,
        log_to_driver=False,
    )
    try:
        status = Controller(recipe, store, cache_dir=str(cache)).run()
    finally:
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
    runs = store.read_runs()
    assert status["counts"]["COMPLETE"] == 2, runs["error"].tolist()
    assert runs["worker"].nunique() == 2  # two workers ...
    start = pd.to_datetime(runs["started_at"])
    end = pd.to_datetime(runs["ended_at"])
    assert start.max() < end.min()  # ... at the same time, on the one GPU
    traces = store.read_traces()
    train = traces[traces["step"] < 6]
    assert train["rollout_logp_diff_mean"].between(0.0, 0.05).all()
