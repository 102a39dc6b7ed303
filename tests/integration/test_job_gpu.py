"""The RLVR job on CUDA in bfloat16 (skipped without a GPU; see tests/conftest.py).

Run on a GPU machine with ``pytest -q -m gpu tests/integration/test_job_gpu.py``.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import pytest
import torch

from sweeper.config.job import RLVRJob
from sweeper.rl.job import JobRunner, row_keys

JOB = {
    "steps": 8,
    "device": "cuda",
    "policy": {"dtype": "bfloat16"},
    "prompts_per_step": 8,
    "group_size": 4,
    "mini_batches": 2,
    "eval": {"every": 4, "prompts": 16, "samples": 4, "ks": [1, 4]},
    "loss": {"kind": "nsr", "rescue_prob": 0.5},
}


@pytest.mark.gpu
def test_short_job_on_cuda_bf16(tmp_path) -> None:
    runner = JobRunner(cache_dir=tmp_path)
    rows = list(runner.run(JOB, seed=0))
    assert [r["step"] for r in rows] == list(range(9))
    keys = row_keys(RLVRJob.model_validate(JOB))
    for row in rows:
        assert list(row) == keys
    train, evals = rows[:-1], [rows[0], rows[4], rows[8]]
    for row in train:
        assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
        assert 0.0 < row["entropy"] < math.log(16)
        assert row["tokens_per_s"] > 0
    for row in evals:
        assert 0.0 <= row["mean_at_n"] <= row["pass_at_4"] <= 1.0
    # The live model is on the GPU in the requested dtype.
    loaded = runner.policy(RLVRJob.model_validate(JOB), torch.device("cuda"))
    param = next(loaded.model.parameters())
    assert param.device.type == "cuda" and param.dtype == torch.bfloat16


@pytest.mark.gpu
def test_cuda_rows_repeat_with_same_seed(tmp_path) -> None:
    # bf16 CUDA kernels are not guaranteed bitwise deterministic; the sampled rewards of the
    # first step (before any update) are, since they only depend on the base and the seed.
    runner = JobRunner(cache_dir=tmp_path)
    first = next(iter(runner.run(JOB, seed=3)))
    again = next(iter(runner.run(JOB, seed=3)))
    assert first["reward_mean"] == again["reward_mean"]
    assert first["mean_at_n"] == again["mean_at_n"]


# --------------------------------------------------------------------------- real-model path


def _qwen_05b_dir(root: Path) -> Path:
    """A Qwen2.5-0.5B-shaped model (random weights, built from its config) and an offline
    tokenizer covering every id (printable characters plus filler tokens), saved to ``root``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab_size = 151936
    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {t: i for i, t in enumerate(["<|endoftext|>", "<|pad|>", *chars])}
    vocab.update({f"<x{i}>": i for i in range(len(vocab), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|pad|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    config = Qwen2Config(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def _real_job(policy_dir: Path, tmp_path: Path, **extra: object) -> dict:
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "\n".join(json.dumps({"question": f"{i}+{i}?", "answer": str(2 * i)}) for i in range(40))
    )
    return {
        "steps": 2,
        "device": "cuda",
        "policy": {"name": str(policy_dir), "gradient_checkpointing": True},
        "precision": "bf16-mixed",
        "micro_batch_size": 4,
        "task": {"kind": "gsm8k", "path": str(data), "verifier": "math_verify"},
        "prompts_per_step": 4,
        "group_size": 4,
        "mini_batches": 2,
        "max_new_tokens": 64,
        "lr": 1e-6,
        "eval": {"every": 2, "prompts": 2, "samples": 2, "ks": [1], "log_samples": 2},
        **extra,
    }


@pytest.mark.gpu
def test_qwen_05b_shape_bf16_mixed_micro_batched_checkpointed_job(tmp_path) -> None:
    """Short jobs of a 0.5B-shaped model on CUDA: bf16-mixed (fp32 master weights),
    micro-batches of 4, gradient checkpointing; full weights then LoRA on the same worker. After
    a first job (which creates the one-time CUDA workspaces), every later job leaves CUDA's
    allocated memory exactly where it found it (its post-load value)."""
    policy_dir = _qwen_05b_dir(tmp_path / "qwen")
    runner = JobRunner(cache_dir=tmp_path / "cache")
    for extra in ({}, {"policy": {"name": str(policy_dir), "lora": {"r": 16}}}):
        job = RLVRJob.model_validate(_real_job(policy_dir, tmp_path, **extra))
        torch.cuda.reset_peak_memory_stats()
        first = list(runner.run(job, seed=0))
        torch.cuda.synchronize()
        post_load = torch.cuda.memory_allocated()
        for seed in (1, 2):
            rows = list(runner.run(job, seed=seed))
            torch.cuda.synchronize()
            assert abs(torch.cuda.memory_allocated() - post_load) <= 1 << 20, (extra, seed)
        for r in first[:-1] + rows[:-1]:
            assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])
        assert all(len(r["_samples"]) == 2 for r in rows if r["step"] in (0, 2))
        live = runner.policy(job, torch.device("cuda"))
        assert {p.dtype for p in live.trainable_parameters()} == {torch.float32}
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"{'lora' if extra else 'full'}: peak {peak:.2f} GiB, post-load {post_load / 2**30:.2f} GiB"
        )


@pytest.mark.gpu
def test_micro_batched_step_equals_full_step_on_cuda(tmp_path) -> None:
    """fp32 on CUDA (TF32 off): the micro-batched optimizer step equals the unsplit one."""
    import sweeper.rl.job as job_module

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runner = JobRunner(cache_dir=tmp_path)
    base = {**JOB, "policy": {}, "loss": {"kind": "clip_cov", "cov_ratio": 0.2, "cov_lb": -100.0}}
    full = runner.context(RLVRJob.model_validate(base), 0, torch.device("cuda"))
    g = torch.Generator("cuda").manual_seed(1)
    prompts = [full.encode(p.prompt) for p in full.task.eval_problems(8)]
    batch = full.engine.generate(prompts, n=4, temperature=1.0, max_new_tokens=5, generator=g)
    logp, _ = job_module.logp_and_entropy(full.model, batch, 1.0)
    old = logp + 0.4 * torch.randn(logp.shape, device="cuda", generator=g)
    adv = torch.randn(batch.size, device="cuda", generator=g)
    mask = batch.response_mask
    job_module._update(full, batch, old, adv, mask, 0, 0)
    want = [p.detach().clone() for p in full.policy.trainable_parameters()]
    micro = runner.context(
        RLVRJob.model_validate({**base, "micro_batch_size": 3}), 0, torch.device("cuda")
    )
    job_module._update(micro, batch, old, adv, mask, 0, 0)
    for p, q in zip(micro.policy.trainable_parameters(), want, strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0)
