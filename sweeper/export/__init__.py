"""Export the best configs of a sweep for a full-scale trainer (DESIGN §6).

One file per exported trial, ``<sweep>-best<k><ext>`` in ``<sweep>/export/`` unless ``out_dir``
is given, by a target from :data:`TARGETS` (one module per target):

- ``yaml`` (:mod:`sweeper.export.recipe`): a complete sweeper recipe re-running the trial;
- ``verl`` (:mod:`sweeper.export.verl`): verl config overrides;
- ``trl`` (:mod:`sweeper.export.trl`): keyword arguments of TRL's ``GRPOConfig``.

Each file starts with a comment header saying where it came from and how the trial scored. A
variant a target cannot express raises :class:`~sweeper.errors.InputError` naming the variant,
the target and what the target supports -- before any file is written.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sweeper.errors import InputError
from sweeper.export.base import ExportTarget, apply_params, best_recipe, override_literal
from sweeper.export.recipe import RecipeTarget
from sweeper.export.trl import TrlTarget, trl_kwargs
from sweeper.export.verl import VERL_NO_DUAL_CLIP, VerlTarget, verl_overrides
from sweeper.rank import objective_of, param_keys_of, rank_sweep
from sweeper.store import SweepStore, decode_param

TARGETS: dict[str, ExportTarget] = {t.name: t for t in (RecipeTarget(), VerlTarget(), TrlTarget())}
"""Every export target by its ``--format`` name."""

FORMATS: tuple[str, ...] = tuple(TARGETS)

__all__ = [
    "FORMATS",
    "TARGETS",
    "VERL_NO_DUAL_CLIP",
    "ExportTarget",
    "apply_params",
    "best_recipe",
    "export_best",
    "trl_kwargs",
    "verl_overrides",
]


def _header(store: SweepStore, row: pd.Series, k: int, params: dict[str, Any]) -> list[str]:
    obj = objective_of(store)
    std = row["value_std"]
    std_txt = "" if pd.isna(std) else f" ± {std:.4g}"
    lines = [
        f"Best config #{k} of sweep {store.name}, exported by `sweeper export`.",
        f"source: {store.uri} (trial {int(row['trial'])}, state {row['state']})",
        f"objective: {obj.metric} ({obj.mode}, scope {obj.scope}, {obj.seed_agg} over seeds) "
        f"= {row['value']:.6g}{std_txt} over {int(row['n_seeds'])} seed(s)",
    ]
    if not pd.isna(row["final_entropy"]):
        lines.append(f"final entropy: {row['final_entropy']:.4g}")
    if params:
        lines.append(
            "params: " + ", ".join(f"{key}={override_literal(v)}" for key, v in params.items())
        )
    return lines


def export_best(
    store: SweepStore, top: int = 1, fmt: str = "yaml", out_dir: str | None = None
) -> list[str]:
    """Write the ``top`` best trials of a sweep in format ``fmt`` (a :data:`TARGETS` name);
    returns the written paths.

    Only COMPLETE, feasible trials with a value are exported, in rank order. Every file is
    rendered (and every mapping checked) before the first one is written, so an unsupported
    variant writes nothing. Default ``out_dir``: ``<sweep>/export/``.
    """
    target = TARGETS.get(fmt)
    if target is None:
        raise InputError(f"export format {fmt!r} is unknown; valid: {', '.join(FORMATS)}")
    if top < 1:
        raise InputError(f"--top must be >= 1 (got {top})")
    ranking = rank_sweep(store)
    ok = ranking[
        (ranking["state"] == "COMPLETE") & ranking["feasible"] & ranking["value"].notna()
    ].head(top)
    if ok.empty:
        raise InputError(f"{store.uri}: no COMPLETE feasible trial with a value to export")
    resolved = store.read_resolved()
    keys = param_keys_of(store)
    rendered: list[tuple[str, str]] = []
    for k, (_, row) in enumerate(ok.iterrows(), start=1):
        params = {key: decode_param(row[key]) for key in keys if key in row.index}
        recipe = best_recipe(resolved, params, store.name, k)
        try:
            text = target.render(recipe, _header(store, row, k, params))
        except InputError as err:
            raise InputError(f"export --format {fmt} of trial {int(row['trial'])}: {err}") from err
        rendered.append((f"{recipe.name}{target.ext}", text))
    out = SweepStore(out_dir) if out_dir is not None else SweepStore(store.path("export"))
    return [out.write_text(name, text) for name, text in rendered]
