"""The job's training-side options in the torch-free config: precision vs policy.dtype, LoRA,
chat template, micro-batches, eval samples, the file task's verifier."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sweeper.config.job import SAMPLES_KEY, FileTask, RLVRJob


@pytest.mark.parametrize(
    ("job", "param", "autocast"),
    [
        ({}, "float32", None),  # old recipes: policy.dtype decides, no autocast
        ({"policy": {"dtype": "bfloat16"}}, "bfloat16", None),
        ({"policy": {"dtype": "float16"}}, "float16", None),
        ({"precision": "fp32"}, "float32", None),
        ({"precision": "bf16-mixed"}, "float32", "bfloat16"),  # fp32 master weights
        ({"precision": "bf16"}, "bfloat16", None),
        ({"precision": "bf16", "policy": {"dtype": "bfloat16"}}, "bfloat16", None),
    ],
)
def test_precision_rule(job: dict, param: str, autocast: str | None) -> None:
    cfg = RLVRJob.model_validate(job)
    assert (cfg.param_dtype, cfg.autocast_dtype) == (param, autocast)
    # the resolved dict (what crosses the Ray boundary) validates to the same thing
    again = RLVRJob.model_validate(cfg.model_dump(mode="json"))
    assert (again.param_dtype, again.autocast_dtype) == (param, autocast)


@pytest.mark.parametrize(
    "job",
    [
        {"precision": "bf16-mixed", "policy": {"dtype": "bfloat16"}},
        {"precision": "fp32", "policy": {"dtype": "float16"}},
        {"precision": "bf16", "policy": {"dtype": "float16"}},
        {"precision": "fp16"},
    ],
)
def test_conflicting_precision_is_rejected(job: dict) -> None:
    with pytest.raises(ValidationError, match="precision"):
        RLVRJob.model_validate(job)


def test_lora_block() -> None:
    cfg = RLVRJob.model_validate({"policy": {"lora": {"r": 8}}})
    assert cfg.policy.lora is not None
    assert (cfg.policy.lora.alpha, cfg.policy.lora.dropout) == (32, 0.0)
    assert cfg.policy.lora.target_modules == "all-linear"
    for bad in ({"r": 0}, {"dropout": 1.0}, {"target_modules": []}, {"rank": 4}):
        with pytest.raises(ValidationError):
            RLVRJob.model_validate({"policy": {"lora": bad}})


def test_chat_template_system_prompt_micro_batches_and_samples() -> None:
    cfg = RLVRJob.model_validate(
        {
            "policy": {"system_prompt": "Be brief.", "gradient_checkpointing": True},
            "micro_batch_size": 4,
            "eval": {"log_samples": 6},
        }
    )
    assert cfg.policy.chat_template is None and cfg.micro_batch_size == 4
    assert cfg.eval.log_samples == 6 and SAMPLES_KEY.startswith("_")
    with pytest.raises(ValidationError, match="system_prompt needs the chat template"):
        RLVRJob.model_validate({"policy": {"system_prompt": "x", "chat_template": False}})
    for bad in ({"micro_batch_size": 0}, {"eval": {"log_samples": -1}}):
        with pytest.raises(ValidationError):
            RLVRJob.model_validate(bad)


def test_file_task_verifier() -> None:
    assert FileTask(path="x.jsonl").verifier == "numeric"
    assert FileTask(path="x.jsonl", verifier="math_verify").verifier == "math_verify"
    with pytest.raises(ValidationError):
        FileTask(path="x.jsonl", verifier="sympy")
