"""The registry of Optuna samplers a recipe can name in ``search.sampler``.

Each entry builds its sampler from the recipe's ``search`` block and names the optional packages
it needs; a missing one is an ``InputError`` naming the package and how to install it, before
anything runs. ``tests/unit/test_registries.py`` runs one contract suite over every entry.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeper.errors import InputError

if TYPE_CHECKING:
    import optuna

    from sweeper.config.recipe import SearchConfig


@dataclass(frozen=True)
class SamplerEntry:
    """One sampler: how to build it, and the packages it needs beyond Optuna."""

    build: Callable[[int | None], optuna.samplers.BaseSampler]
    """Called with ``search.sampler_seed``; imports optuna lazily."""
    needs: tuple[tuple[str, str], ...] = ()
    """(module, install hint) pairs."""
    summary: str = ""


def _tpe(seed: int | None) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _random(seed: int | None) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int | None) -> Any:
    import optuna

    return optuna.samplers.CmaEsSampler(seed=seed)


def _gp(seed: int | None) -> Any:
    import optuna

    return optuna.samplers.GPSampler(seed=seed)


def _qmc(seed: int | None) -> Any:
    import optuna

    return optuna.samplers.QMCSampler(seed=seed)


SAMPLERS: dict[str, SamplerEntry] = {
    "tpe": SamplerEntry(_tpe, summary="Tree-structured Parzen estimator (Optuna's default)."),
    "random": SamplerEntry(_random, summary="Independent uniform draws."),
    "cmaes": SamplerEntry(_cmaes, (("cmaes", "pip install cmaes"),), "CMA-ES."),
    "gp": SamplerEntry(
        _gp,
        (("scipy", "pip install scipy"), ("torch", "GPSampler runs on torch")),
        "Gaussian-process Bayesian optimisation.",
    ),
    "qmc": SamplerEntry(_qmc, (("scipy", "pip install scipy"),), "Quasi-Monte Carlo (Sobol)."),
}
"""Every sampler by its ``search.sampler`` name (the names of ``SearchConfig.sampler``)."""


def missing_packages(name: str) -> list[str]:
    """The packages sampler ``name`` needs that are not installed, with install hints."""
    return [
        f"the `{module}` package ({hint})"
        for module, hint in SAMPLERS[name].needs
        if importlib.util.find_spec(module) is None
    ]


def resumed_seed(seed: int | None, n_trials: int) -> int | None:
    """The sampler seed of a study rebuilt with ``n_trials`` trials: derived from
    ``search.sampler_seed`` and the trial count, so a resumed sweep does not replay the random
    draws it began with, and the same sweep dir always resumes the same way (None stays None)."""
    if seed is None or n_trials == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, n_trials]).generate_state(1)[0])


def make_sampler(search: SearchConfig, n_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler for ``search.sampler``, seeded by ``search.sampler_seed`` (a study rebuilt
    with ``n_trials`` trials gets :func:`resumed_seed`). A grid search gets a RandomSampler that
    is never consulted: every grid trial's params are fixed by enqueue."""
    name = "random" if search.kind == "grid" else search.sampler
    if name not in SAMPLERS:
        raise InputError(f"search.sampler: unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    missing = missing_packages(name)
    if missing:
        raise InputError(f"search.sampler: {name} needs {', '.join(missing)}")
    return SAMPLERS[name].build(resumed_seed(search.sampler_seed, n_trials))
