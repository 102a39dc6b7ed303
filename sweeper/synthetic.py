"""The ``synthetic`` job kind: step rows from a closed-form function of the loss parameters.

No torch, milliseconds per job: it lets the controller, ranking, export and the benchmark against
Ray Tune run fast and at scale, with traces shaped like a real job's (same column names).

The landscape and its true values (what a test or benchmark can rely on):

- :func:`final_accuracy`: ``0.2 + 0.65 * exp(-d)`` with ``d = sum(((q(v) - q(opt)) / q(w))**2)``
  over the knobs the loss block sets, ``q(x) = x / (1 + x)`` (so ``inf`` is finite) and
  ``(opt, w)`` per knob in ``_OPTIMA``. The optimum is eps_low 0.15, eps_high 0.3,
  rescue_prob 0.6, rescue_margin 0.1 (beta_low/high 0.5, kl_coef 0.5): 0.85 there.
- :func:`expected_accuracy`: the noise-free accuracy after ``step`` updates,
  ``A - (A - 0.2) * exp(-step / tau)`` with ``A = final_accuracy`` and ``tau = max(steps/4, 1)``:
  increasing in ``A`` at every step > 0, so the config with the highest :func:`final_accuracy`
  is the true best of an accuracy metric (``mean_at_n``, ``pass_at_k``, ``accuracy``, mode
  max) under every ``objective.scope``.
- One seed's accuracy at a step is ``clip(expected + offset + eps, 0, 1)``: ``offset`` is the
  seed's draw from N(0, ``seed_noise``), fixed by the seed and the loss block
  (:func:`seed_offset`; independent across configs and seeds, constant over steps, like the
  spread between independent RL runs); ``eps`` is the per-step draw from N(0, ``noise``), fixed
  by (seed, step) and so shared by every config run with that seed. ``accuracy``,
  ``reward_mean``, ``mean_at_n`` and ``pass_at_k = 1 - (1 - acc)**k`` follow from it.
  Away from the clip at 0 and 1 the expectation over seeds of ``mean_at_n`` at a step is
  :func:`expected_accuracy`, and its spread over seeds is ``sqrt(seed_noise**2 + noise**2)``.
- Entropy decays as ``1.2 * exp(-entropy_decay * step)`` times per-step noise; no seed offset.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from typing import Any

from sweeper.config.job import SyntheticJob

# Where each knob is best, and the scale of its penalty: (optimum, width).
_OPTIMA = {
    "eps_low": (0.15, 0.15),
    "eps_high": (0.3, 0.3),
    "rescue_prob": (0.6, 0.5),
    "rescue_margin": (0.1, 0.2),
    "beta_low": (0.5, 1.0),
    "beta_high": (0.5, 1.0),
    "kl_coef": (0.5, 2.0),
}
_H0 = 1.2  # step-0 entropy (nats)
_ACC0 = 0.2  # step-0 accuracy


def _squash(x: float) -> float:
    """Maps [0, inf] to [0, 1] so eps_high = inf stays finite."""
    return 1.0 if math.isinf(x) else x / (1.0 + x)


def final_accuracy(loss: dict[str, Any]) -> float:
    """The accuracy a config converges to: 0.85 at the optimum, falling off with distance."""
    distance = 0.0
    for name, (best, width) in _OPTIMA.items():
        value = loss.get(name)
        if isinstance(value, int | float) and value is not None:
            distance += ((_squash(value) - _squash(best)) / _squash(width)) ** 2
    return _ACC0 + (0.85 - _ACC0) * math.exp(-distance)


def entropy_decay(loss: dict[str, Any]) -> float:
    """Per-step entropy decay rate: clip-high lowers entropy, clip-low raises it (2509.26114)."""
    eps_low = float(loss.get("eps_low", 0.2))
    eps_high = float(loss.get("eps_high", 0.2))
    return max(0.002, 0.02 * (1.0 + 2.0 * (0.3 - _squash(eps_high)) - eps_low))


def expected_accuracy(loss: dict[str, Any], steps: int, step: int) -> float:
    """The noise-free accuracy after ``step`` of ``steps`` updates (the mean over seeds)."""
    target = final_accuracy(loss)
    tau = max(steps / 4.0, 1.0)
    return target - (target - _ACC0) * math.exp(-step / tau)


def seed_offset(loss: dict[str, Any], seed: int, sigma: float) -> float:
    """The seed's offset of a whole accuracy trajectory: a draw from N(0, ``sigma``) fixed by
    the seed and the loss block (a string-seeded RNG: the same in every process)."""
    if sigma == 0.0:
        return 0.0
    key = json.dumps(loss, sort_keys=True, default=str)
    return random.Random(f"seed-noise:{key}:{seed}").gauss(0.0, sigma)


def run_synthetic(job: dict[str, Any] | SyntheticJob, seed: int) -> Iterator[dict[str, float]]:
    """Yield one row per step 0..steps (the state after ``step`` updates), like a real job.

    Eval columns (``pass_at_k``, ``mean_at_n``, ``eval_entropy``) are set at step 0, every
    ``eval.every`` steps and the last step, NaN elsewhere; train columns are NaN at the last step.
    """
    cfg = job if isinstance(job, SyntheticJob) else SyntheticJob.model_validate(job)
    loss = cfg.loss.model_dump()
    decay = entropy_decay(loss)
    offset = seed_offset(loss, seed, cfg.seed_noise)
    nan = float("nan")
    for step in range(cfg.steps + 1):
        if cfg.fail_at_step is not None and step == cfg.fail_at_step:
            raise RuntimeError(f"synthetic failure at step {step} (fail_at_step)")
        if cfg.step_seconds:
            time.sleep(cfg.step_seconds)
        rng = random.Random(f"{seed}:{step}")
        acc = expected_accuracy(loss, cfg.steps, step) + offset
        acc = min(max(acc + rng.gauss(0.0, cfg.noise), 0.0), 1.0)
        entropy = _H0 * math.exp(-decay * step) * (1.0 + rng.gauss(0.0, cfg.noise))
        last = step == cfg.steps
        row: dict[str, float] = {"step": step}
        train = {
            "reward_mean": acc,
            "accuracy": acc,
            "entropy": entropy,
            "clip_low_frac": 0.05 * float(loss.get("eps_low", 0.0) < 0.1),
            "clip_high_frac": 0.0,
            "dual_clip_frac": 0.0,
            "rescued_frac": 0.0,
            "cov_selected_frac": 0.0,
            "approx_kl": 1e-3,
            "loss": -acc,
            "grad_norm": 1.0,
            "response_len": 4.0,
        }
        row.update({k: (nan if last else v) for k, v in train.items()})
        evaluated = step % cfg.eval.every == 0 or last
        for k in cfg.eval.ks:
            row[f"pass_at_{k}"] = 1.0 - (1.0 - acc) ** k if evaluated else nan
        row["mean_at_n"] = acc if evaluated else nan
        row["eval_entropy"] = entropy if evaluated else nan
        yield row
