"""The RLVR job: one (config, seed) GRPO-style run that yields one row of metrics per step.

Read top to bottom (cleanrl style). A worker holds one :class:`JobRunner`; it keeps imports,
tasks, tokenizers and base policies in memory across jobs, and per job resets the model to the
base weights and builds a fresh optimizer::

    runner = JobRunner()
    for row in runner.run({"steps": 50, "loss": {"kind": "ppo_clip"}}, seed=0):
        print(row["step"], row["entropy"], row["mean_at_n"])

or, for one job, ``run_job(job, seed)`` (a list of rows).

Per step s (policy after s updates; DESIGN §3):
  1. eval (s == 0, s % eval.every == 0, s == steps): fixed held-out prompts, eval.samples each
     at eval.temperature -> pass_at_{k}, mean_at_n, eval_entropy;
  2. train (s < steps): sample prompts_per_step prompts, group_size responses each; rewards from
     the task; group advantages; old log-probs + entropy under no_grad; shuffle into mini_batches
     (ppo_epochs passes), one AdamW step per mini-batch with the configured policy loss.
Every row has the same keys (:func:`row_keys`); a metric not measured at a step is NaN.
Same seed on the same machine -> identical rows, except ``time_*`` and ``tokens_per_s``.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from sweeper.config.job import RLVR_EVAL_COLUMNS, RLVR_TRAIN_COLUMNS, RLVRJob
from sweeper.config.messages import describe_validation_error
from sweeper.errors import InputError
from sweeper.rl.advantages import group_advantages
from sweeper.rl.losses import METRIC_KEYS, policy_loss
from sweeper.rl.metrics import entropy_from_logits, pass_at_k, token_logprobs_and_entropy
from sweeper.rl.policy import BasePolicy, TokenizerLike, load_base_policy, warm_start_identity
from sweeper.rl.rollout import RolloutBatch, RolloutEngine, make_engine, response_logits
from sweeper.rl.tasks import Problem, Task, make_task
from sweeper.seeding import derive_seed

__all__ = [
    "EVAL_KEYS",
    "TRAIN_KEYS",
    "JobRunner",
    "NonFiniteLossError",
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
    (:meth:`RLVRJob.trace_columns`)."""
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


# --------------------------------------------------------------------------- tensor helpers


@torch.no_grad()
def _logp_and_entropy(
    model: torch.nn.Module, batch: RolloutBatch, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp [B, T], entropy [B, T]) of the response tokens, in row chunks (no grad)."""
    rows = _chunk_rows(model, batch)
    logps, ents = [], []
    for start in range(0, batch.size, rows):
        part = batch.rows(torch.arange(start, min(start + rows, batch.size)))
        logits = response_logits(model, part)  # [b, T, V]
        logp, ent = token_logprobs_and_entropy(logits, part.response_ids, temperature)
        logps.append(logp)
        ents.append(ent)
    return torch.cat(logps), torch.cat(ents)


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


@dataclass
class _LoadedPolicy:
    base: BasePolicy
    model: torch.nn.Module


class JobRunner:
    """Runs RLVR jobs one after another in one process (a warm worker).

    Keeps built tasks and base policies (with one live model each) in memory, keyed by the
    task config and the policy config (+ task for ``tiny``, + device), so a job with the same
    base only pays ``load_state_dict`` and a new optimizer.

    Args:
        cache_dir: root of the on-disk tiny-policy cache (default ``$SWEEPER_CACHE`` or
            ``~/.cache/sweeper``).
        max_policies: base policies kept in memory (least recently used dropped first).
    """

    def __init__(self, cache_dir: str | Path | None = None, max_policies: int = 2) -> None:
        self.cache_dir = cache_dir
        self.max_policies = max_policies
        self._tasks: dict[str, Task] = {}
        self._policies: OrderedDict[str, _LoadedPolicy] = OrderedDict()

    # -- cached pieces

    def task(self, job: RLVRJob) -> Task:
        """The job's task, built once per task config."""
        key = json.dumps(job.task.model_dump(mode="json"), sort_keys=True)
        if key not in self._tasks:
            self._tasks[key] = make_task(job.task)
        return self._tasks[key]

    def policy(self, job: RLVRJob, device: torch.device) -> _LoadedPolicy:
        """The job's base policy and its live model (weights not yet reset)."""
        parts: dict[str, Any] = {
            "policy": job.policy.model_dump(mode="json"),
            "device": str(device),
        }
        if job.policy.name == "tiny":  # the tiny base depends on the task (alphabet, warm start)
            parts["task"] = warm_start_identity(job.task)
        key = json.dumps(parts, sort_keys=True)
        if key in self._policies:
            self._policies.move_to_end(key)
            return self._policies[key]
        base = load_base_policy(
            job.policy, self.task(job), job.task, device=device, cache_dir=self.cache_dir
        )
        loaded = _LoadedPolicy(base, base.build_model(device))
        self._policies[key] = loaded
        while len(self._policies) > self.max_policies:
            self._policies.popitem(last=False)
        return loaded

    # -- the job

    def run(self, job: dict[str, Any] | RLVRJob, seed: int) -> Iterator[dict[str, Any]]:
        """Validate ``job`` now (``InputError`` on bad input) and return the row generator.

        Rows are produced lazily: the caller may stop between steps by closing the generator.
        """
        cfg = validate_job(job)
        _warn_if_clipping_inert(cfg)
        device = _resolve_device(cfg.device)
        return self._rows(cfg, int(seed), device)

    def _rows(self, job: RLVRJob, seed: int, device: torch.device) -> Iterator[dict[str, Any]]:
        # --- set-up: threads, task, base policy (cached), weights reset, fresh optimizer
        torch.set_num_threads(job.threads)
        task = self.task(job)
        loaded = self.policy(job, device)
        model, tokenizer = loaded.model, loaded.base.tokenizer
        loaded.base.reset(model)
        model.eval()  # no dropout in RL updates: the ratio must compare the same function
        model.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=job.lr, weight_decay=job.weight_decay)
        engine = make_engine(job.engine, model, tokenizer.eos_id, tokenizer.pad_id)

        # --- seeding: one independent stream per purpose, so e.g. eval frequency does not
        # change the training trajectory
        torch.manual_seed(derive_seed(seed, "torch"))
        prompt_rng = random.Random(derive_seed(seed, "prompts"))
        sample_gen = torch.Generator(device).manual_seed(derive_seed(seed, "sample"))
        loss_gen = torch.Generator(device).manual_seed(derive_seed(seed, "loss"))
        shuffle_gen = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
        reset = getattr(task, "reset", None)
        if callable(reset):
            reset(seed)

        eval_problems = task.eval_problems(job.eval.prompts)
        eval_prompts = [tokenizer.encode_prompt(p.prompt) for p in eval_problems]
        keys = row_keys(job)

        for step in range(job.steps + 1):
            row: dict[str, Any] = dict.fromkeys(keys, math.nan)
            row["step"] = step
            if _is_eval_step(step, job):
                eval_gen = torch.Generator(device).manual_seed(derive_seed(seed, "eval", step))
                row.update(
                    _evaluate(
                        job,
                        model,
                        engine,
                        tokenizer,
                        task,
                        eval_problems,
                        eval_prompts,
                        eval_gen,
                        device,
                    )
                )
            if step < job.steps:
                row.update(
                    _train_step(
                        job,
                        step,
                        model,
                        engine,
                        optimizer,
                        params,
                        tokenizer,
                        task,
                        prompt_rng,
                        sample_gen,
                        loss_gen,
                        shuffle_gen,
                        device,
                    )
                )
            yield row


# --------------------------------------------------------------------------- eval


def _evaluate(
    job: RLVRJob,
    model: torch.nn.Module,
    engine: RolloutEngine,
    tokenizer: TokenizerLike,
    task: Task,
    problems: list[Problem],
    prompts: list[list[int]],
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    start = time.perf_counter()
    n = job.eval.samples
    batch = engine.generate(
        prompts,
        n=n,
        temperature=job.eval.temperature,
        max_new_tokens=job.max_new_tokens,
        generator=generator,
    )
    texts = _decode_rows(tokenizer, batch)
    # correct[j] = number of correct samples for eval prompt j (rows j*n .. j*n+n-1)
    correct = [
        sum(bool(task.correct(problems[j], texts[j * n + i])) for i in range(n))
        for j in range(len(problems))
    ]
    out = {
        f"pass_at_{k}": sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in job.eval.ks
    }
    out["mean_at_n"] = sum(correct) / (n * len(correct))
    mask = batch.response_mask.float()
    ents = []
    with torch.no_grad():
        rows = _chunk_rows(model, batch)
        for begin in range(0, batch.size, rows):
            part = batch.rows(torch.arange(begin, min(begin + rows, batch.size)))
            ents.append(entropy_from_logits(response_logits(model, part), job.eval.temperature))
    out["eval_entropy"] = _masked_mean(torch.cat(ents), mask)
    _sync(device)
    out["time_eval_s"] = time.perf_counter() - start
    return out


def _chunk_rows(model: torch.nn.Module, batch: RolloutBatch) -> int:
    """Rows per no-grad forward so one chunk's logits stay under ``_LOGIT_BUDGET`` elements."""
    vocab = int(model.get_output_embeddings().weight.shape[0])
    return max(1, _LOGIT_BUDGET // ((batch.response_ids.shape[1] + 1) * vocab))


# --------------------------------------------------------------------------- one train step


def _train_step(
    job: RLVRJob,
    step: int,
    model: torch.nn.Module,
    engine: RolloutEngine,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    tokenizer: TokenizerLike,
    task: Task,
    prompt_rng: random.Random,
    sample_gen: torch.Generator,
    loss_gen: torch.Generator,
    shuffle_gen: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    group = job.group_size

    # --- 1. rollout: prompts_per_step prompts x group_size samples, rewards from the verifier
    start = time.perf_counter()
    problems = task.train_problems(prompt_rng, job.prompts_per_step)
    batch = engine.generate(
        [tokenizer.encode_prompt(p.prompt) for p in problems],
        n=group,
        temperature=job.temperature,
        max_new_tokens=job.max_new_tokens,
        generator=sample_gen,
    )
    texts = _decode_rows(tokenizer, batch)
    rewards = [float(task.reward(problems[i // group], t)) for i, t in enumerate(texts)]
    hits = [bool(task.correct(problems[i // group], t)) for i, t in enumerate(texts)]
    _sync(device)
    time_generate = time.perf_counter() - start

    # --- 2. advantages; old log-probs and entropy under the pre-update policy
    start = time.perf_counter()
    reward_t = torch.tensor(rewards, dtype=torch.float32)
    advantages = group_advantages(reward_t, group, job.advantage).to(device)  # [B]
    old_logp, entropy = _logp_and_entropy(model, batch, job.temperature)  # [B, T] each
    mask = batch.response_mask  # [B, T]
    mean_entropy = _masked_mean(entropy, mask.float())
    _sync(device)
    time_old_logp = time.perf_counter() - start

    # --- 3. update: ppo_epochs passes, each a shuffle split into mini_batches optimizer steps
    start = time.perf_counter()
    sums: dict[str, float] = dict.fromkeys((*METRIC_KEYS, "loss", "grad_norm"), 0.0)
    updates = 0
    for _epoch in range(job.ppo_epochs):
        order = torch.randperm(batch.size, generator=shuffle_gen)
        for idx_cpu in order.tensor_split(job.mini_batches):
            idx = idx_cpu.to(device)
            mb = batch.rows(idx)
            logits = response_logits(model, mb)  # [b, T, V], with grad
            logp, _ = token_logprobs_and_entropy(logits, mb.response_ids, job.temperature)
            out = policy_loss(
                logp,
                old_logp[idx],
                advantages[idx],
                mask[idx],
                job.loss,
                norm_len=job.max_new_tokens,
                generator=loss_gen,
            )
            loss_value = float(out.loss.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"non-finite policy loss ({loss_value}) at step {step}, update {updates}"
                )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            # clip_grad_norm_ returns the total norm before clipping
            grad_norm = torch.nn.utils.clip_grad_norm_(params, job.max_grad_norm)
            optimizer.step()
            sums["loss"] += loss_value
            sums["grad_norm"] += float(grad_norm)
            for key in METRIC_KEYS:
                sums[key] += float(out.metrics.get(key, 0.0))
            updates += 1
    engine.sync_weights()
    _sync(device)
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
    )
    return row


# --------------------------------------------------------------------------- convenience


def run_job(
    job: dict[str, Any] | RLVRJob, seed: int, cache_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Run one job to the end in a fresh :class:`JobRunner`; returns its rows."""
    return list(JobRunner(cache_dir=cache_dir).run(job, seed))
