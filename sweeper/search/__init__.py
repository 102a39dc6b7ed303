"""The search: one Optuna study per sweep, driven by ask/tell (DESIGN §4).

- ``study``: :class:`Search` (ask / report / tell / recover on the study, ask-ahead);
- ``rebuild``: the study rebuilt from the sweep dir alone (resume needs no database);
- ``mirror``, ``storage``: the study's copy in an SQLAlchemy storage (optuna-dashboard);
- ``samplers``, ``pruners``: the registries of what a recipe can name;
- ``distributions``: a parameter spec as an Optuna distribution and ``suggest_*`` call.
"""

from sweeper.search.pruners import PRUNERS, make_pruner
from sweeper.search.samplers import SAMPLERS, make_sampler
from sweeper.search.storage import default_storage_url, make_storage, storage_url
from sweeper.search.study import Search

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
