"""The registry of Optuna pruners a recipe can name in ``search.pruner.kind``.

A pruner acts on the intermediate values the controller reports: the objective metric at each
eval step, averaged over the trial's seeds. ``tests/unit/test_registries.py`` runs one contract
suite over every entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sweeper.errors import InputError

if TYPE_CHECKING:
    import optuna

    from sweeper.config.recipe import PrunerConfig

PrunerFactory = Callable[["PrunerConfig", int], "optuna.pruners.BasePruner"]
"""Builds a pruner from the recipe's pruner block and the job's number of steps."""


def _none(cfg: PrunerConfig, max_steps: int) -> Any:
    import optuna

    return optuna.pruners.NopPruner()


def _median(cfg: PrunerConfig, max_steps: int) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps
    )


def _percentile(cfg: PrunerConfig, max_steps: int) -> Any:
    import optuna

    return optuna.pruners.PercentilePruner(
        cfg.percentile, n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps
    )


def _successive_halving(cfg: PrunerConfig, max_steps: int) -> Any:
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource="auto")


def _hyperband(cfg: PrunerConfig, max_steps: int) -> Any:
    import optuna

    # The resource is the training step; Hyperband's max resource is the job's steps.
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_steps, 1))


PRUNERS: dict[str, PrunerFactory] = {
    "none": _none,
    "median": _median,
    "percentile": _percentile,
    "successive_halving": _successive_halving,
    "hyperband": _hyperband,
}
"""Every pruner by its ``search.pruner.kind`` name (the names of ``PrunerConfig.kind``)."""


def make_pruner(pruner: PrunerConfig | None, max_steps: int) -> optuna.pruners.BasePruner:
    """The pruner for ``search.pruner`` (None: never prune)."""
    kind = "none" if pruner is None else pruner.kind
    if kind not in PRUNERS:
        raise InputError(
            f"search.pruner.kind: unknown pruner {kind!r}; valid: {', '.join(PRUNERS)}"
        )
    return PRUNERS[kind](pruner, max_steps)  # type: ignore[arg-type]
