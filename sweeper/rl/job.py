"""The RLVR job: one (config, seed) GRPO-style run that yields one row of metrics per step.

Read top to bottom (cleanrl style). A worker holds one :class:`JobRunner`; it keeps imports,
tasks, tokenizers, base policies and their live models in memory across jobs, and per job resets
the live model (all weights, or only the LoRA adapter) and builds a fresh optimizer::

    runner = JobRunner()
    for row in runner.run({"steps": 50, "loss": {"kind": "ppo_clip"}}, seed=0):
        print(row["step"], row["entropy"], row["mean_at_n"])

or, for one job, ``run_job(job, seed)`` (a list of rows). Everything a job's steps use lives in
one :class:`JobContext` (config, model, optimizer, engine, prompt encoder, task, generators).

Per step s (policy after s updates; DESIGN §3):
  1. eval (s == 0, s % eval.every == 0, s == steps): fixed held-out prompts, eval.samples each
     at eval.temperature -> pass_at_{k}, mean_at_n, eval_entropy (and, with eval.log_samples,
     the logged completions under the reserved key ``SAMPLES_KEY``);
  2. train (s < steps): sample prompts_per_step prompts, group_size responses each; rewards from
     the task; group advantages; old log-probs + entropy under no_grad; shuffle into mini_batches
     (ppo_epochs passes), one AdamW step per mini-batch with the configured policy loss, each
     mini-batch split into micro-batches of micro_batch_size whose gradients accumulate to
     exactly the unsplit update (``sweeper.rl.losses.plan_mini_batch``).
Every row has the same metric keys (:func:`row_keys`); a metric not measured at a step is NaN.
Same seed on the same machine -> identical rows, except ``time_*`` and ``tokens_per_s``, whatever
jobs ran before on the worker.

Precision (``job.precision``): the model's forwards run under ``torch.autocast`` in bf16-mixed
(parameters and AdamW state stay float32); log-probs, ratios and losses are float32 always.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from sweeper.config.job import RLVR_EVAL_COLUMNS, RLVR_TRAIN_COLUMNS, SAMPLES_KEY, RLVRJob
from sweeper.config.messages import describe_validation_error
from sweeper.errors import InputError
from sweeper.rl.advantages import group_advantages
from sweeper.rl.engines import RolloutBatch, RolloutEngine, make_engine, response_logits
from sweeper.rl.losses import METRIC_KEYS, needs_current_logp, plan_mini_batch, policy_loss
from sweeper.rl.metrics import pass_at_k, token_logprobs_and_entropy
from sweeper.rl.policy import (
    BasePolicy,
    LivePolicy,
    TokenizerLike,
    load_base_policy,
    prompt_encoder,
    warm_start_identity,
)
from sweeper.rl.rollout_correction import truncated_importance_weights
from sweeper.rl.tasks import Problem, Task, make_task
from sweeper.seeding import derive_seed

__all__ = [
    "EVAL_KEYS",
    "SAMPLES_KEY",
    "TRAIN_KEYS",
    "JobContext",
    "JobRunner",
    "NonFiniteLossError",
    "logp_and_entropy",
    "row_keys",
    "run_job",
    "validate_job",
]

# The row's columns are declared once, torch-free, in sweeper.config.job (the checks hold a
# recipe's objective to them); a new column is added there.
TRAIN_KEYS: tuple[str, ...] = RLVR_TRAIN_COLUMNS
"""Columns measured on train steps (s < steps)."""

EVAL_KEYS: tuple[str, ...] = RLVR_EVAL_COLUMNS
"""Columns measured on eval steps, besides ``pass_at_{k}`` for each k in ``eval.ks``."""

# Logit elements per no-grad forward chunk (old log-probs, eval entropy): bounds memory for
# large vocabularies (rows * (T+1) * V float32 values, ~256 MiB); the tiny policy fits in one.
_LOGIT_BUDGET = 1 << 26

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The policy loss became NaN or inf (the controller records it as the trial's error)."""


# --------------------------------------------------------------------------- config helpers


def validate_job(job: dict[str, Any] | RLVRJob) -> RLVRJob:
    """A job block (plain dict from across the Ray boundary, or a model) as a validated
    :class:`RLVRJob`. Errors are one-line :class:`InputError` naming the field."""
    if isinstance(job, RLVRJob):
        return job
    if not isinstance(job, dict):
        raise InputError(f"job: expected a mapping, got {type(job).__name__}")
    if job.get("kind", "rlvr") != "rlvr":
        raise InputError(f"job.kind: JobRunner runs 'rlvr' jobs, got {job.get('kind')!r}")
    try:
        return RLVRJob.model_validate(job)
    except ValidationError as err:
        raise InputError(describe_validation_error(err, "job")) from None


def row_keys(job: RLVRJob) -> list[str]:
    """Every row's keys, in order: ``step``, the train columns, ``pass_at_{k}``, eval columns
    (:meth:`RLVRJob.trace_columns`). (An eval row of a job with ``eval.log_samples`` also
    carries ``SAMPLES_KEY``, which the controller takes out.)"""
    return job.trace_columns()


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device: 'cuda' requested but no CUDA device is visible")
    return torch.device(name)


def _warn_if_clipping_inert(job: RLVRJob) -> None:
    # Kinds with eps_low/eps_high clip; kl_cov does not. With one mini-batch and one epoch every
    # update is on-policy (ratio == 1), so the clip knobs cannot change anything.
    if not job.clipping_can_act and hasattr(job.loss, "eps_low"):
        warnings.warn(
            f"loss kind '{job.loss.kind}' clips, but clipping cannot act with mini_batches=1 and "
            "ppo_epochs=1 (every update is on-policy: the ratio is identically 1); "
            "use mini_batches >= 2",
            UserWarning,
            stacklevel=3,
        )


def _is_eval_step(step: int, job: RLVRJob) -> bool:
    return step == 0 or step % job.eval.every == 0 or step == job.steps


# --------------------------------------------------------------------------- the job context


@dataclass
class Generators:
    """One independent RNG stream per purpose, seeded from the job seed, so e.g. the eval
    frequency does not change the training trajectory (eval gets a fresh generator per step)."""

    prompts: random.Random
    sample: torch.Generator
    loss: torch.Generator
    shuffle: torch.Generator

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> Generators:
        return cls(
            prompts=random.Random(derive_seed(seed, "prompts")),
            sample=torch.Generator(device).manual_seed(derive_seed(seed, "sample")),
            loss=torch.Generator(device).manual_seed(derive_seed(seed, "loss")),
            shuffle=torch.Generator().manual_seed(derive_seed(seed, "shuffle")),
        )


@dataclass
class JobContext:
    """Everything one job's steps use, built once per job by :class:`JobRunner`.

    Attributes:
        job: the validated job config.
        seed: the job seed.
        device: where the model lives.
        policy: the live policy (its ``model``; reset to the base / initial adapter).
        optimizer: AdamW over ``policy.trainable_parameters()`` (fresh per job).
        engine: the rollout engine sampling from ``policy.model``.
        tokenizer: the policy's tokenizer (decoding responses).
        encode: task prompt text -> prompt ids (the chat template applied when on).
        task: prompts, rewards and correctness.
        gens: the job's RNG streams.
    """

    job: RLVRJob
    seed: int
    device: torch.device
    policy: LivePolicy
    optimizer: torch.optim.Optimizer
    engine: RolloutEngine
    tokenizer: TokenizerLike
    encode: Callable[[str], list[int]]
    task: Task
    gens: Generators

    @property
    def model(self) -> torch.nn.Module:
        return self.policy.model

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The compute context of every model forward: bfloat16 autocast in bf16-mixed."""
        name = self.job.autocast_dtype
        if name is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[name])

    def micro_rows(self, size: int) -> int:
        """Sequences per forward/backward for a (mini-)batch of ``size`` rows."""
        return min(self.job.micro_batch_size or size, size)


# --------------------------------------------------------------------------- tensor helpers


@torch.no_grad()
def logp_and_entropy(
    model: torch.nn.Module,
    batch: RolloutBatch,
    temperature: float,
    *,
    chunk_rows: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one no-grad forward of the job: (logp [B, T], entropy [B, T]) of the response tokens
    under ``model``, in row chunks of at most ``chunk_rows`` (default: as many as keep one
    chunk's logits under the logit budget), each forward inside ``autocast()``."""
    vocab = int(model.get_output_embeddings().weight.shape[0])
    budget_rows = max(1, _LOGIT_BUDGET // ((batch.response_ids.shape[1] + 1) * vocab))
    rows = budget_rows if chunk_rows is None else chunk_rows
    logps, ents = [], []
    for start in range(0, batch.size, rows):
        part = batch.rows(torch.arange(start, min(start + rows, batch.size)))
        with autocast():
            logits = response_logits(model, part)  # [b, T, V]
        logp, ent = token_logprobs_and_entropy(logits, part.response_ids, temperature)
        logps.append(logp)
        ents.append(ent)
    return torch.cat(logps), torch.cat(ents)


def _no_grad_pass(
    ctx: JobContext, batch: RolloutBatch, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``logp_and_entropy`` in chunks of ``micro_batch_size`` rows when it is set (a grad pass
    of that size fits, so a no-grad one does), else as the logit budget allows."""
    return logp_and_entropy(
        ctx.model,
        batch,
        temperature,
        chunk_rows=ctx.job.micro_batch_size,
        autocast=ctx.autocast,
    )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    total = mask.sum()
    return float((values * mask).sum() / total) if total > 0 else math.nan


def _decode_rows(tokenizer: TokenizerLike, batch: RolloutBatch) -> list[str]:
    ids = batch.response_ids.tolist()
    lengths = batch.response_lengths().tolist()
    return [tokenizer.decode(row[:n]) for row, n in zip(ids, lengths, strict=True)]


def _sync(device: torch.device) -> None:
    # Timings on CUDA need the queued kernels to finish.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- the runner


class JobRunner:
    """Runs RLVR jobs one after another in one process (a warm worker).

    Keeps built tasks, base policies (host weights + tokenizer) and live models in memory: a base
    by its policy name and tiny config (+ task for ``tiny``); a live model by its base, parameter
    dtype, LoRA config and device. A job with the same live model only pays a reset (all weights,
    or just the adapter) and a new optimizer; the prompt template, system prompt and gradient
    checkpointing are per job and need no new model. For ``engine: vllm`` it keeps one warm
    rollout engine (:meth:`engine`), so such a job only pays a push of the base weights.

    Args:
        cache_dir: root of the on-disk tiny-policy cache (default ``$SWEEPER_CACHE`` or
            ``~/.cache/sweeper``).
        max_policies: live models (and bases) kept in memory (least recently used dropped first).
        gpu_fraction: this worker's share of its GPU (``run.resources.num_gpus``); sizes the
            vLLM engine's default memory share. None: the whole GPU.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        max_policies: int = 2,
        gpu_fraction: float | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.max_policies = max_policies
        self.gpu_fraction = gpu_fraction
        self._tasks: dict[str, Task] = {}
        self._bases: OrderedDict[str, BasePolicy] = OrderedDict()
        self._policies: OrderedDict[str, LivePolicy] = OrderedDict()
        self._warm_engine: tuple[str, RolloutEngine] | None = None
        self.engine_setup: dict[str, Any] = {}
        """The last vLLM job's engine set-up: ``built`` (a new engine) and ``seconds``."""

    # -- cached pieces

    def task(self, job: RLVRJob) -> Task:
        """The job's task, built once per task config."""
        key = json.dumps(job.task.model_dump(mode="json"), sort_keys=True)
        if key not in self._tasks:
            self._tasks[key] = make_task(job.task)
        return self._tasks[key]

    @staticmethod
    def _base_key(job: RLVRJob) -> str:
        parts: dict[str, Any] = {"name": job.policy.name, "tiny": job.policy.tiny.model_dump()}
        if job.policy.name == "tiny":  # the tiny base depends on the task (alphabet, warm start)
            parts["task"] = warm_start_identity(job.task)
        return json.dumps(parts, sort_keys=True)

    def base(self, job: RLVRJob, device: torch.device) -> BasePolicy:
        """The job's base policy (host weights and tokenizer), loaded once."""
        key = self._base_key(job)
        if key not in self._bases:
            self._bases[key] = load_base_policy(
                job.policy, self.task(job), job.task, device=device, cache_dir=self.cache_dir
            )
        self._bases.move_to_end(key)
        while len(self._bases) > self.max_policies:
            self._bases.popitem(last=False)
        return self._bases[key]

    def policy(self, job: RLVRJob, device: torch.device) -> LivePolicy:
        """The job's live policy (not yet reset)."""
        base = self.base(job, device)
        lora = job.policy.lora.model_dump(mode="json") if job.policy.lora is not None else None
        key = json.dumps([self._base_key(job), job.param_dtype, lora, str(device)], sort_keys=True)
        if key not in self._policies:
            self._policies[key] = LivePolicy(
                base, device, _DTYPES[job.param_dtype], job.policy.lora
            )
        self._policies.move_to_end(key)
        while len(self._policies) > self.max_policies:
            self._policies.popitem(last=False)
        return self._policies[key]

    def engine(self, job: RLVRJob, policy: LivePolicy) -> RolloutEngine:
        """The job's rollout engine, sampling from the live policy's current weights.

        ``hf`` shares the live model (built per job, free). An engine with its own weights
        (``vllm``) is kept warm: the next job of the same base policy, parameter dtype and
        engine options only pushes the (reset) policy's weights into it -- with LoRA the merged
        ones (:meth:`LivePolicy.merged_weights`); a job of another base replaces it, since
        vLLM's process-wide state and the device memory allow one per worker.
        """
        model, tokenizer = policy.model, policy.base.tokenizer
        if job.engine == "hf":
            return make_engine("hf", model, tokenizer.eos_id, tokenizer.pad_id)
        start = time.perf_counter()
        options = job.vllm.model_dump(mode="json")
        key = json.dumps(
            [job.engine, self._base_key(job), job.param_dtype, options], sort_keys=True
        )
        weights = policy.merged_weights().items()
        if self._warm_engine is not None and self._warm_engine[0] == key:
            engine = self._warm_engine[1]
            engine.sync_weights(weights)  # per-job reset: push the base weights
            built = False
        else:
            self.close()
            engine = make_engine(
                job.engine,
                model,
                tokenizer.eos_id,
                tokenizer.pad_id,
                options=job.vllm,
                gpu_fraction=self.gpu_fraction,
                weights=weights,
            )
            self._warm_engine = (key, engine)
            built = True
        self.engine_setup = {"built": built, "seconds": time.perf_counter() - start}
        return engine

    @property
    def warm_engine(self) -> RolloutEngine | None:
        """The engine kept for the next job (``vllm``), or None."""
        return None if self._warm_engine is None else self._warm_engine[1]

    def close(self) -> None:
        """Shut down the warm engine, if any (the runner stays usable)."""
        warm, self._warm_engine = self._warm_engine, None
        if warm is not None:
            warm[1].close()

    # -- the job

    def run(self, job: dict[str, Any] | RLVRJob, seed: int) -> Iterator[dict[str, Any]]:
        """Validate ``job`` now (``InputError`` on bad input) and return the row generator.

        Rows are produced lazily: the caller may stop between steps by closing the generator.
        """
        cfg = validate_job(job)
        _warn_if_clipping_inert(cfg)
        device = _resolve_device(cfg.device)
        return self._rows(cfg, int(seed), device)

    def context(self, job: RLVRJob, seed: int, device: torch.device) -> JobContext:
        """A job's starting point: threads, task, the live policy reset, a fresh optimizer, the
        engine, the prompt encoder and the seeded generators."""
        torch.set_num_threads(job.threads)
        task = self.task(job)
        policy = self.policy(job, device)
        tokenizer = policy.base.tokenizer
        encode = prompt_encoder(tokenizer, job.policy)
        policy.reset()
        policy.set_gradient_checkpointing(job.policy.gradient_checkpointing)
        optimizer = torch.optim.AdamW(
            policy.trainable_parameters(), lr=job.lr, weight_decay=job.weight_decay
        )
        engine = self.engine(job, policy)  # warm across jobs; holds the base weights now
        torch.manual_seed(derive_seed(seed, "torch"))
        reset = getattr(task, "reset", None)
        if callable(reset):
            reset(seed)
        return JobContext(
            job=job,
            seed=seed,
            device=device,
            policy=policy,
            optimizer=optimizer,
            engine=engine,
            tokenizer=tokenizer,
            encode=encode,
            task=task,
            gens=Generators.seeded(seed, device),
        )

    def _rows(self, job: RLVRJob, seed: int, device: torch.device) -> Iterator[dict[str, Any]]:
        ctx = self.context(job, seed, device)
        try:
            eval_problems = ctx.task.eval_problems(job.eval.prompts)
            eval_prompts = [ctx.encode(p.prompt) for p in eval_problems]
            keys = row_keys(job)
            for step in range(job.steps + 1):
                row: dict[str, Any] = dict.fromkeys(keys, math.nan)
                row["step"] = step
                if _is_eval_step(step, job):
                    row.update(_evaluate(ctx, step, eval_problems, eval_prompts))
                if step < job.steps:
                    row.update(_train_step(ctx, step))
                yield row
        finally:
            # Nothing of this job outlives it on the worker: gradients and optimizer state go
            # (on CUDA, allocated memory returns to its post-load value).
            ctx.optimizer.zero_grad(set_to_none=True)
            ctx.optimizer.state.clear()
            ctx.policy.set_gradient_checkpointing(False)


# --------------------------------------------------------------------------- eval


def _evaluate(
    ctx: JobContext, step: int, problems: list[Problem], prompts: list[list[int]]
) -> dict[str, Any]:
    job, task = ctx.job, ctx.task
    start = time.perf_counter()
    n = job.eval.samples
    generator = torch.Generator(ctx.device).manual_seed(derive_seed(ctx.seed, "eval", step))
    with ctx.autocast():
        batch = ctx.engine.generate(
            prompts,
            n=n,
            temperature=job.eval.temperature,
            max_new_tokens=job.max_new_tokens,
            generator=generator,
        )
    texts = _decode_rows(ctx.tokenizer, batch)
    hits = [bool(task.correct(problems[i // n], text)) for i, text in enumerate(texts)]
    # correct[j] = number of correct samples for eval prompt j (rows j*n .. j*n+n-1)
    correct = [sum(hits[j * n : (j + 1) * n]) for j in range(len(problems))]
    out: dict[str, Any] = {
        f"pass_at_{k}": sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in job.eval.ks
    }
    out["mean_at_n"] = sum(correct) / (n * len(correct))
    _, entropy = _no_grad_pass(ctx, batch, job.eval.temperature)
    out["eval_entropy"] = _masked_mean(entropy, batch.response_mask.float())
    if job.eval.log_samples:
        out[SAMPLES_KEY] = _samples(ctx, problems, texts, hits)
    _sync(ctx.device)
    out["time_eval_s"] = time.perf_counter() - start
    return out


def _samples(
    ctx: JobContext, problems: list[Problem], texts: list[str], hits: list[bool]
) -> list[dict[str, Any]]:
    """The logged eval completions: sample j is prompt j % P's (j // P)-th sample, so the first
    P logged rows cover P different prompts."""
    n, n_prompts = ctx.job.eval.samples, len(problems)
    reward = getattr(ctx.task, "eval_reward", ctx.task.reward)
    out = []
    for j in range(min(ctx.job.eval.log_samples, n * n_prompts)):
        p, i = j % n_prompts, j // n_prompts
        row = p * n + i
        out.append(
            {
                "sample": j,
                "prompt": problems[p].prompt,
                "response": texts[row],
                "reward": float(reward(problems[p], texts[row])),
                "correct": hits[row],
            }
        )
    return out


# --------------------------------------------------------------------------- one train step


def _train_step(ctx: JobContext, step: int) -> dict[str, float]:
    job, task, group = ctx.job, ctx.task, ctx.job.group_size

    # --- 1. rollout: prompts_per_step prompts x group_size samples, rewards from the verifier
    start = time.perf_counter()
    problems = task.train_problems(ctx.gens.prompts, job.prompts_per_step)
    with ctx.autocast():
        batch = ctx.engine.generate(
            [ctx.encode(p.prompt) for p in problems],
            n=group,
            temperature=job.temperature,
            max_new_tokens=job.max_new_tokens,
            generator=ctx.gens.sample,
        )
    texts = _decode_rows(ctx.tokenizer, batch)
    rewards = [float(task.reward(problems[i // group], t)) for i, t in enumerate(texts)]
    hits = [bool(task.correct(problems[i // group], t)) for i, t in enumerate(texts)]
    _sync(ctx.device)
    time_generate = time.perf_counter() - start

    # --- 2. advantages; old log-probs and entropy under the pre-update policy
    start = time.perf_counter()
    reward_t = torch.tensor(rewards, dtype=torch.float32)
    advantages = group_advantages(reward_t, group, job.advantage).to(ctx.device)  # [B]
    old_logp, entropy = _no_grad_pass(ctx, batch, job.temperature)  # [B, T] each
    mask = batch.response_mask  # [B, T]
    mean_entropy = _masked_mean(entropy, mask.float())
    # The engine's own log-probs never enter the ratio; they measure the mismatch and, with
    # rollout_correction, reweight the tokens (truncated importance sampling).
    logp_diff = _logp_mismatch(old_logp, batch)
    weights = _correction_weights(job, old_logp, batch)  # [B, T] or None
    _sync(ctx.device)
    time_old_logp = time.perf_counter() - start

    # --- 3. update: ppo_epochs passes, each a shuffle split into mini_batches optimizer steps
    start = time.perf_counter()
    sums: dict[str, float] = dict.fromkeys((*METRIC_KEYS, "loss", "grad_norm"), 0.0)
    updates = 0
    for _epoch in range(job.ppo_epochs):
        order = torch.randperm(batch.size, generator=ctx.gens.shuffle)
        for idx_cpu in order.tensor_split(job.mini_batches):
            idx = idx_cpu.to(ctx.device)
            mini = batch.rows(idx)
            w = None if weights is None else weights[idx]
            out = _update(ctx, mini, old_logp[idx], advantages[idx], mask[idx], step, updates, w)
            for key, value in out.items():
                sums[key] += value
            updates += 1
    if ctx.engine.holds_weights:  # vLLM: the next rollout must see the updated policy
        ctx.engine.sync_weights(ctx.policy.merged_weights().items())
    _sync(ctx.device)
    time_update = time.perf_counter() - start

    # --- 4. the row's train columns
    n_tokens = float(mask.sum())
    row = {key: value / updates for key, value in sums.items()}
    row.update(
        reward_mean=sum(rewards) / len(rewards),
        accuracy=sum(hits) / len(hits),
        entropy=mean_entropy,
        response_len=n_tokens / batch.size,
        time_generate_s=time_generate,
        time_old_logp_s=time_old_logp,
        time_update_s=time_update,
        tokens_per_s=n_tokens / max(time_generate + time_old_logp + time_update, 1e-9),
        rollout_logp_diff_mean=logp_diff[0],
        rollout_logp_diff_max=logp_diff[1],
    )
    return row


def _logp_mismatch(old_logp: torch.Tensor, batch: RolloutBatch) -> tuple[float, float]:
    """(mean, max) of |trainer logp - engine logp| over response tokens; NaN without
    engine log-probs (engine: hf) or tokens."""
    mask = batch.response_mask.bool()
    if batch.engine_logp is None or not bool(mask.any()):
        return math.nan, math.nan
    diff = (old_logp - batch.engine_logp).abs()[mask]
    return float(diff.mean()), float(diff.max())


def _correction_weights(
    job: RLVRJob, old_logp: torch.Tensor, batch: RolloutBatch
) -> torch.Tensor | None:
    """[B, T] per-token loss weights of ``job.rollout_correction`` (None when off)."""
    correction = job.rollout_correction
    if correction is None or batch.engine_logp is None:
        return None
    return truncated_importance_weights(
        old_logp, batch.engine_logp, batch.response_mask, correction.cap
    )


def _update(
    ctx: JobContext,
    mini: RolloutBatch,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    step: int,
    update: int,
    token_weights: torch.Tensor | None = None,
) -> dict[str, float]:
    """One optimizer step on one mini-batch (``old_logp``, ``mask``, ``token_weights`` [b, T] --
    the last None without a rollout correction --, ``advantages`` [b]), in micro-batches whose
    gradients accumulate to exactly the unsplit step; returns the step's loss, grad norm and
    loss metrics."""
    job = ctx.job
    size = mini.size
    micro = ctx.micro_rows(size)
    parts = [slice(i, min(i + micro, size)) for i in range(0, size, micro)]

    # The plan holds what every micro-batch must share: the mini-batch's normalisers, its random
    # draws and (Clip-Cov, KL-Cov) its covariance selection, which needs the whole mini-batch's
    # current log-probs: a no-grad pass in the same micro-batch chunks when split, else the
    # detached log-probs of the one grad pass below.
    plan = None
    if len(parts) > 1:
        current = None
        if needs_current_logp(job.loss):
            current, _ = logp_and_entropy(
                ctx.model, mini, job.temperature, chunk_rows=micro, autocast=ctx.autocast
            )
        plan = plan_mini_batch(
            old_logp,
            advantages,
            mask,
            job.loss,
            logp=current,
            norm_len=job.max_new_tokens,
            generator=ctx.gens.loss,
        )

    ctx.optimizer.zero_grad(set_to_none=True)
    totals = dict.fromkeys((*METRIC_KEYS, "loss"), 0.0)
    for part in parts:
        micro_batch = mini.rows(part)  # type: ignore[arg-type]  # a slice indexes rows too
        with ctx.autocast():
            logits = response_logits(ctx.model, micro_batch)  # [m, T, V], with grad
        logp, _ = token_logprobs_and_entropy(logits, micro_batch.response_ids, job.temperature)
        if plan is None:
            plan = plan_mini_batch(
                old_logp,
                advantages,
                mask,
                job.loss,
                logp=logp.detach(),
                norm_len=job.max_new_tokens,
                generator=ctx.gens.loss,
            )
        out = policy_loss(
            logp,
            old_logp[part],
            advantages[part],
            mask[part],
            job.loss,
            norm_len=job.max_new_tokens,
            token_weights=None if token_weights is None else token_weights[part],
            **plan.part(part),
        )
        loss_value = float(out.loss.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"non-finite policy loss ({loss_value}) at step {step}, update {update}"
            )
        out.loss.backward()
        totals["loss"] += loss_value  # each part's loss is its share of the mini-batch's
        for key in METRIC_KEYS:
            totals[key] += float(out.metrics.get(key, 0.0))
    # clip_grad_norm_ returns the total norm before clipping
    grad_norm = torch.nn.utils.clip_grad_norm_(ctx.policy.trainable_parameters(), job.max_grad_norm)
    ctx.optimizer.step()
    return {**totals, "grad_norm": float(grad_norm)}


# --------------------------------------------------------------------------- convenience


def run_job(
    job: dict[str, Any] | RLVRJob, seed: int, cache_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Run one job to the end in a fresh :class:`JobRunner`; returns its rows."""
    return list(JobRunner(cache_dir=cache_dir).run(job, seed))
