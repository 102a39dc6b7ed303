"""Export target ``yaml``: a complete sweeper recipe re-running the trial (``sweeper run`` it)."""

from __future__ import annotations

from sweeper.config.recipe import Recipe
from sweeper.export.base import comment, dump_yaml


class RecipeTarget:
    """The sweep's job with the trial's params set, no search space, a grid over the sweep's
    seeds, named ``<sweep>-best<k>``. Every loss kind exports."""

    name = "yaml"
    ext = ".yaml"

    def render(self, recipe: Recipe, header: list[str]) -> str:
        head = [*header, "", f"Re-run: sweeper run {recipe.name}.yaml"]
        data = recipe.model_dump(mode="python")
        data["job"] = {"kind": data["job"].pop("kind"), **data["job"]}  # kind first, for readers
        return comment(head) + dump_yaml(data)
