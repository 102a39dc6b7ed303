"""The search: one Optuna study per sweep, driven by ask/tell (DESIGN §4).

- ``study``: :class:`Search` (ask / report / tell / recover on the study) and its storage;
- ``samplers``, ``pruners``: the registries of what a recipe can name;
- ``distributions``: a parameter spec as an Optuna distribution and ``suggest_*`` call.
"""

from sweeper.search.pruners import PRUNERS, make_pruner
from sweeper.search.samplers import SAMPLERS, make_sampler
from sweeper.search.study import Search, default_storage_url, make_storage, storage_url

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "Search",
    "default_storage_url",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "storage_url",
]
