"""The ``synthetic`` job kind: step rows from a closed-form function of the loss parameters.

No torch, milliseconds per job: it lets the controller, ranking, export and the benchmark against
Ray Tune run fast and at scale, with traces shaped like a real job's (same column names). The
landscape is smooth with a known optimum (eps_low 0.15, eps_high 0.3, rescue_prob 0.6,
rescue_margin 0.1), so a search that works finds it.
"""

from __future__ import annotations

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


def run_synthetic(job: dict[str, Any] | SyntheticJob, seed: int) -> Iterator[dict[str, float]]:
    """Yield one row per step 0..steps (the state after ``step`` updates), like a real job.

    Eval columns (``pass_at_k``, ``mean_at_n``, ``eval_entropy``) are set at step 0, every
    ``eval.every`` steps and the last step, NaN elsewhere; train columns are NaN at the last step.
    """
    cfg = job if isinstance(job, SyntheticJob) else SyntheticJob.model_validate(job)
    loss = cfg.loss.model_dump()
    target, decay = final_accuracy(loss), entropy_decay(loss)
    tau = max(cfg.steps / 4.0, 1.0)
    nan = float("nan")
    for step in range(cfg.steps + 1):
        if cfg.fail_at_step is not None and step == cfg.fail_at_step:
            raise RuntimeError(f"synthetic failure at step {step} (fail_at_step)")
        if cfg.step_seconds:
            time.sleep(cfg.step_seconds)
        rng = random.Random(f"{seed}:{step}")
        acc = target - (target - _ACC0) * math.exp(-step / tau)
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
