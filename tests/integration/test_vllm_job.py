"""The RLVR job with ``engine: vllm`` (vLLM's CPU build) on the warm-started tiny policy: rows
and the mismatch columns, weight pushes every step, the warm engine across jobs, truncated
importance sampling in the loss, sampling parity with the HF engine, and a sweep through the
controller on a private local Ray. Skipped when vLLM is not installed."""

from __future__ import annotations

import importlib.util
import math
import shutil
import statistics
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

import sweeper.rl.job as job_module
from sweeper.config.job import RLVRJob
from sweeper.rl.engines import HFEngine, VLLMEngine, response_logits
from sweeper.rl.job import JobRunner, row_keys
from sweeper.rl.metrics import token_logprobs_and_entropy

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm not installed"
)

torch.set_num_threads(1)

# lr 1e-3: big enough that an engine left on old weights shows in the mismatch columns.
JOB = {
    "steps": 4,
    "prompts_per_step": 4,
    "group_size": 4,
    "mini_batches": 2,
    "max_new_tokens": 5,
    "lr": 1e-3,
    "engine": "vllm",
    "vllm": {"max_model_len": 64},
    "eval": {"every": 2, "prompts": 8, "samples": 4, "ks": [1, 4]},
}
TIMING = {"time_generate_s", "time_old_logp_s", "time_update_s", "tokens_per_s", "time_eval_s"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweeper_cache")


@pytest.fixture(scope="module")
def runner(cache_dir):
    runner = JobRunner(cache_dir=cache_dir)
    yield runner
    runner.close()


def _no_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _same_rows(a: list[dict], b: list[dict]) -> bool:
    def same(x, y):
        return (isinstance(x, float) and math.isnan(x) and math.isnan(y)) or x == y

    a, b = _no_timing(a), _no_timing(b)
    return len(a) == len(b) and all(
        ra.keys() == rb.keys() and all(same(ra[k], rb[k]) for k in ra)
        for ra, rb in zip(a, b, strict=True)
    )


# --------------------------------------------------------------------------- the job


def test_rows_carry_small_mismatch_columns(runner) -> None:
    rows = list(runner.run(JOB, seed=0))
    keys = row_keys(RLVRJob.model_validate(JOB))
    assert "rollout_logp_diff_mean" in keys and "rollout_logp_diff_max" in keys
    assert [r["step"] for r in rows] == list(range(5))
    for row in rows:
        assert list(row) == keys
    for row in rows[:-1]:  # train steps
        mean, worst = row["rollout_logp_diff_mean"], row["rollout_logp_diff_max"]
        assert 0.0 <= mean <= worst < 1e-3, (mean, worst)  # float32: same weights, same numbers
        assert math.isfinite(row["loss"]) and 0.0 <= row["reward_mean"] <= 1.0
    assert math.isnan(rows[-1]["rollout_logp_diff_mean"])  # the last row has no train step
    # The HF engine samples from the trainer's own module: nothing to compare.
    hf = list(runner.run({**JOB, "engine": "hf"}, seed=0))
    assert all(math.isnan(r["rollout_logp_diff_max"]) for r in hf)


def test_lora_job_pushes_merged_weights(runner) -> None:
    """With LoRA the live model carries adapter layers; the engine gets the merged weights in
    the base model's names, so it keeps sampling what the trainer scores as the adapter learns
    (lr 1e-2 moves it: a push of the base alone would leave a visible gap)."""
    job = {
        **JOB,
        "lr": 1e-2,
        "policy": {
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
        },
    }
    rows = list(runner.run(job, seed=0))
    for row in rows[:-1]:
        assert row["rollout_logp_diff_max"] < 1e-3, row["rollout_logp_diff_max"]
    assert rows[-2]["approx_kl"] != 0.0  # the adapter did train


def test_an_engine_left_on_old_weights_shows_in_the_columns(runner, monkeypatch) -> None:
    """Negative control: drop every push after the job's first (the base reset), and the
    engine's log-probs drift away from the trainer's as it learns."""
    push = VLLMEngine.sync_weights
    calls: list[int] = []

    def first_push_only(self, weights):
        calls.append(1)
        if len(calls) == 1:
            push(self, weights)

    list(runner.run(JOB, seed=0))  # the engine is warm: the next job only pushes
    monkeypatch.setattr(VLLMEngine, "sync_weights", first_push_only)
    rows = list(runner.run(JOB, seed=0))
    assert len(calls) == 1 + JOB["steps"]  # the reset + one push per step
    assert rows[0]["rollout_logp_diff_max"] < 1e-3
    assert rows[JOB["steps"] - 1]["rollout_logp_diff_max"] > 1e-2


def test_second_job_reuses_the_engine_and_starts_from_the_base(runner) -> None:
    first = list(runner.run(JOB, seed=0))
    engine = runner.warm_engine
    other = list(runner.run(JOB, seed=1))
    assert runner.engine_setup["built"] is False and runner.warm_engine is engine
    again = list(runner.run(JOB, seed=0))
    assert runner.engine_setup["built"] is False
    assert runner.engine_setup["seconds"] < engine.start_seconds / 10  # a push, not a start
    # The trained weights of the jobs in between were replaced by the base: same rows.
    assert _same_rows(first, again)
    assert not _same_rows(first, other)
    # Other engine options need another engine: the warm one is replaced.
    list(runner.run({**JOB, "steps": 1, "vllm": {"max_model_len": 96}}, seed=0))
    assert runner.engine_setup["built"] is True and runner.warm_engine is not engine
    assert engine.llm is None  # the old one was shut down


def test_truncated_importance_weights_reach_the_loss(runner, monkeypatch) -> None:
    seen: list[tuple[torch.Tensor | None, torch.Tensor]] = []
    loss = job_module.policy_loss

    def spy(logp, old_logp, advantages, mask, config, **kwargs):
        seen.append((kwargs.get("token_weights"), mask))
        return loss(logp, old_logp, advantages, mask, config, **kwargs)

    monkeypatch.setattr(job_module, "policy_loss", spy)
    cap = 1.5
    job = {**JOB, "steps": 2, "rollout_correction": {"kind": "tis", "cap": cap}}
    list(runner.run(job, seed=0))
    assert len(seen) == 2 * JOB["mini_batches"]
    for weights, mask in seen:
        assert weights is not None and weights.shape == mask.shape
        valid = mask.bool()
        assert (weights[~valid] == 0).all()
        # The engine matches the trainer here, so min(exp(old - engine), cap) is ~1.
        assert float((weights[valid] - 1.0).abs().max()) < 1e-3
        assert float(weights.max()) <= cap
    seen.clear()
    list(runner.run({**JOB, "steps": 1}, seed=0))
    assert all(weights is None for weights, _ in seen)  # off by default


# --------------------------------------------------------------------------- sampling parity


def _sample_stats(engine, loaded, task, problems, temperature, seed) -> dict[str, list]:
    """Per-sample reward, response length, mean token entropy and mean sampled-token NLL (both
    the trainer's, at T=1) of 32 samples for each problem."""
    n, model, tok = 32, loaded.model, loaded.base.tokenizer
    prompts = [tok.encode_prompt(p.prompt) for p in problems]
    gen = torch.Generator().manual_seed(seed)
    batch = engine.generate(prompts, n=n, temperature=temperature, max_new_tokens=5, generator=gen)
    lengths = batch.response_lengths().tolist()
    texts = [tok.decode(r[:k]) for r, k in zip(batch.response_ids.tolist(), lengths, strict=True)]
    with torch.no_grad():
        logp, ent = token_logprobs_and_entropy(
            response_logits(model, batch), batch.response_ids, 1.0
        )
    mask = batch.response_mask.float()
    return {
        "reward": [float(task.correct(problems[i // n], t)) for i, t in enumerate(texts)],
        "length": [float(k) for k in lengths],
        "entropy": ((ent * mask).sum(1) / mask.sum(1)).tolist(),
        "nll": (-(logp * mask).sum(1) / mask.sum(1)).tolist(),
    }


def _z(a: list[float], b: list[float]) -> float:
    """Two-sample z statistic of the difference of means."""
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return abs(statistics.fmean(a) - statistics.fmean(b)) / se


def test_sampling_parity_with_the_hf_engine(runner) -> None:
    """Same weights, prompts, temperature and verifier: reward, response length, entropy and
    sampled-token NLL of 1024 samples per engine agree within 4 standard errors; a vLLM engine
    at another temperature does not (the comparison can tell distributions apart)."""
    job = RLVRJob.model_validate(JOB)
    loaded = runner.policy(job, torch.device("cpu"))
    loaded.base.reset(loaded.model)
    tok, task = loaded.base.tokenizer, runner.task(job)
    problems = task.eval_problems(32)
    vllm = runner.engine(job, loaded)  # the warm engine, holding the base weights
    hf = HFEngine(loaded.model, tok.eos_id, tok.pad_id)
    ours = _sample_stats(hf, loaded, task, problems, 1.0, seed=0)
    theirs = _sample_stats(vllm, loaded, task, problems, 1.0, seed=1)
    for key in ("reward", "length", "entropy", "nll"):
        assert _z(ours[key], theirs[key]) < 4.0, (key, statistics.fmean(ours[key]))
    assert 0.1 < statistics.fmean(ours["reward"]) < 0.9  # a policy that is right sometimes
    colder = _sample_stats(vllm, loaded, task, problems, 0.5, seed=2)
    assert _z(ours["nll"], colder["nll"]) > 4.0


# --------------------------------------------------------------------------- through the controller


def test_vllm_sweep_streams_rows_and_reuses_the_worker(cache_dir, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    from sweeper.config.loader import load_recipe
    from sweeper.controller import Controller
    from sweeper.store import SweepStore, manifest

    recipe_data = {
        "name": "vllm_sweep",
        "job": {
            **JOB,
            "kind": "rlvr",
            "steps": 3,
            "eval": {"every": 3, "prompts": 4, "samples": 2, "ks": [1]},
        },
        "space": {"loss.eps_high": [0.2, 0.28]},
        "search": {"kind": "grid", "seeds": 1, "max_concurrent": 1},
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {"storage": str(tmp_path / "sweeps"), "max_retries": 0},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_data))
    recipe, text = load_recipe(str(path))
    store = SweepStore.create(recipe.run.storage, recipe.name, text, recipe.resolved(), manifest())
    ray_temp = tempfile.mkdtemp(prefix="swp-", dir="/tmp")  # unix socket paths stay short
    ray.init(
        address="local",
        _temp_dir=ray_temp,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=1,
        log_to_driver=False,
    )
    try:
        status = Controller(recipe, store, cache_dir=str(cache_dir)).run()
    finally:
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert status["counts"]["COMPLETE"] == 2, store.read_runs()["error"].tolist()
    runs = store.read_runs()
    assert set(runs["state"]) == {"COMPLETE"} and runs["worker"].nunique() == 1  # one warm worker
    traces = store.read_traces()
    assert len(traces) == 2 * 4 and not traces.duplicated(["trial", "seed", "step"]).any()
    train = traces[traces["step"] < 3]
    assert train["rollout_logp_diff_max"].between(0.0, 1e-3).all()
    assert (train["rollout_logp_diff_mean"] <= train["rollout_logp_diff_max"]).all()
