"""Token-level and evaluation metrics for the RLVR job (DESIGN §3.2).

- ``entropy_from_logits``: full-vocabulary entropy of the temperature-scaled next-token
  distribution, H = logsumexp(z) - sum softmax(z)·z with z = logits / temperature (never the
  sampled-token NLL).
- ``token_logprobs_and_entropy``: log-probs of the sampled tokens and the entropy from a single
  log_softmax, for the job's old/new log-probs.
- ``pass_at_k`` / ``mean_pass_at_k``: the unbiased estimator of Chen et al. 2021 ("Evaluating
  Large Language Models Trained on Code", arXiv 2107.03374), 1 - C(n-c, k)/C(n, k), computed as
  the numerically stable product of human-eval's ``evaluation.py``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["entropy_from_logits", "mean_pass_at_k", "pass_at_k", "token_logprobs_and_entropy"]


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    # float32 upcast: bf16 logits lose the small differences that set the entropy.
    return logits.float() / temperature


def _entropy_from_log_probs(logq: Tensor) -> Tensor:
    """-sum_v q·log q over the last dim; a -inf log-prob (masked vocab entry) contributes 0
    instead of 0·(-inf) = NaN."""
    safe = torch.where(torch.isneginf(logq), torch.zeros_like(logq), logq)
    return -(logq.exp() * safe).sum(-1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of softmax(logits / temperature) at every position.

    Args:
        logits: [..., V] (any float dtype; computed in float32).
        temperature: > 0.

    Returns:
        [...] float32 entropies in nats, H = logsumexp(z) - sum softmax(z)·z.
    """
    z = _scaled(logits, temperature)
    # log_softmax = z - logsumexp(z), so -sum q·log q == logsumexp(z) - sum q·z, computed stably.
    return _entropy_from_log_probs(torch.log_softmax(z, dim=-1))


def token_logprobs_and_entropy(
    logits: Tensor, tokens: Tensor, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Log-probs of ``tokens`` and the full entropy, from one log_softmax of logits/temperature.

    Args:
        logits: [B, T, V] next-token logits aligned with ``tokens`` (position t predicts
            ``tokens[:, t]``).
        tokens: [B, T] integer token ids.
        temperature: > 0; the rollout's sampling temperature.

    Returns:
        (logp [B, T], entropy [B, T]), float32, differentiable w.r.t. ``logits``.
    """
    if logits.dim() != tokens.dim() + 1 or logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be tokens' shape {tuple(tokens.shape)} + [V]"
        )
    logq = torch.log_softmax(_scaled(logits, temperature), dim=-1)  # [B, T, V]
    logp = logq.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return logp, _entropy_from_log_probs(logq)


def _as_count(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (human-eval), which never forms the huge
    binomials. 1.0 when n - c < k (every k-subset holds a correct sample).

    Raises:
        ValueError: unless n >= 1, 0 <= c <= n and 1 <= k <= n (all integers).
    """
    n, c, k = _as_count("n", n), _as_count("c", c), _as_count("k", k)
    if n < 1:
        raise ValueError(f"pass@k needs n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(ns: Sequence[int], cs: Sequence[int], k: int) -> float:
    """pass@k averaged over prompts; prompt j has ``ns[j]`` samples, ``cs[j]`` correct.

    Raises:
        ValueError: empty or mismatched sequences, or any invalid (n, c, k).
    """
    ns, cs = list(ns), list(cs)
    if len(ns) != len(cs):
        raise ValueError(f"ns and cs differ in length ({len(ns)} vs {len(cs)})")
    if not ns:
        raise ValueError("mean_pass_at_k needs at least one prompt")
    return sum(pass_at_k(n, c, k) for n, c in zip(ns, cs, strict=True)) / len(ns)
