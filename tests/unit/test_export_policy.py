"""Export of LoRA, gradient checkpointing and precision to verl and TRL (sweeper.export.verl, sweeper.export.trl)."""

from __future__ import annotations

import pytest

from sweeper.config.job import RLVRJob
from sweeper.errors import InputError
from sweeper.export.trl import trl_peft_config, trl_policy_kwargs
from sweeper.export.verl import verl_policy_overrides

LORA = {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}


def test_verl_maps_lora_and_checkpointing() -> None:
    job = RLVRJob.model_validate({"policy": {"lora": LORA, "gradient_checkpointing": True}})
    assert verl_policy_overrides(job) == {
        "actor_rollout_ref.model.enable_gradient_checkpointing": True,
        "actor_rollout_ref.model.lora_rank": 8,
        "actor_rollout_ref.model.lora_alpha": 16,
        "actor_rollout_ref.model.target_modules": ["q_proj", "v_proj"],
    }
    full = verl_policy_overrides(RLVRJob.model_validate({}))
    assert full == {
        "actor_rollout_ref.model.enable_gradient_checkpointing": False,
        "actor_rollout_ref.model.lora_rank": 0,
    }
    all_linear = RLVRJob.model_validate({"policy": {"lora": {"r": 4}}})
    assert verl_policy_overrides(all_linear)["actor_rollout_ref.model.target_modules"] == (
        "all-linear"
    )


def test_verl_refuses_lora_dropout() -> None:
    job = RLVRJob.model_validate({"policy": {"lora": {**LORA, "dropout": 0.05}}})
    with pytest.raises(InputError, match="verl has no LoRA dropout"):
        verl_policy_overrides(job)


def test_trl_peft_config_builds_the_same_adapter() -> None:
    from peft import LoraConfig

    job = RLVRJob.model_validate({"policy": {"lora": {**LORA, "dropout": 0.05}}})
    kwargs = trl_peft_config(job)
    config = LoraConfig(**kwargs)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert trl_peft_config(RLVRJob.model_validate({})) is None


@pytest.mark.parametrize(
    ("job", "bf16"),
    [
        ({}, False),
        ({"precision": "bf16-mixed"}, True),
        ({"precision": "bf16"}, True),
        ({"policy": {"dtype": "bfloat16"}}, True),
        ({"precision": "fp32"}, False),
    ],
)
def test_trl_policy_kwargs(job: dict, bf16: bool) -> None:
    kwargs = trl_policy_kwargs(RLVRJob.model_validate(job))
    assert kwargs == {"gradient_checkpointing": False, "bf16": bf16}
    from trl import GRPOConfig

    assert set(kwargs) <= set(GRPOConfig.__dataclass_fields__)
