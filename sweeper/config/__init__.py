"""Torch-free configuration: every schema and the one loader.

Modules (imports flow down this list, never up):

- ``loss``: one params model per policy-loss kind (fields declare which act only off-policy);
- ``space``: search-space parameter specs and grid expansion;
- ``job``: the job block (``rlvr`` and ``synthetic``), its policy, task and eval;
- ``messages``: pydantic errors as one line naming the file and field;
- ``dotted``: dotted keys (``loss.eps_low``) into nested data;
- ``checks``: what a recipe's schema alone cannot check;
- ``recipe``: the recipe (space, search, objective, run);
- ``cluster``: cluster files, per-job resources, storage and auth-token resolution;
- ``loader``: YAML files and ``--set`` overrides into validated recipes and cluster files;
- ``files``: ``sweeper validate`` -- what a file is, checked.
"""

from sweeper.config.cluster import ClusterConfig, resolve_resources, resolve_storage
from sweeper.config.job import (
    SAMPLES_KEY,
    AdditionTask,
    EvalConfig,
    FileTask,
    JobConfig,
    LoRAConfig,
    PolicyConfig,
    RandomRewardTask,
    RLVRJob,
    SyntheticJob,
    TaskConfig,
    TinyPolicyConfig,
    UserTask,
)
from sweeper.config.loader import load_cluster, load_recipe
from sweeper.config.loss import (
    AGGREGATIONS,
    LOSS_PARAMS,
    ClipCovLoss,
    GPPOLoss,
    GSPOLoss,
    KLCovLoss,
    LossConfig,
    LossParams,
    NSRLoss,
    PPOClipLoss,
    loss_catalog,
    parse_loss_config,
)
from sweeper.config.recipe import (
    ConstraintConfig,
    ObjectiveConfig,
    PrunerConfig,
    Recipe,
    ResourcesConfig,
    RunConfig,
    SearchConfig,
)

__all__ = [
    "AGGREGATIONS",
    "LOSS_PARAMS",
    "SAMPLES_KEY",
    "AdditionTask",
    "ClipCovLoss",
    "ClusterConfig",
    "ConstraintConfig",
    "EvalConfig",
    "FileTask",
    "GPPOLoss",
    "GSPOLoss",
    "JobConfig",
    "KLCovLoss",
    "LoRAConfig",
    "LossConfig",
    "LossParams",
    "NSRLoss",
    "ObjectiveConfig",
    "PPOClipLoss",
    "PolicyConfig",
    "PrunerConfig",
    "RLVRJob",
    "RandomRewardTask",
    "Recipe",
    "ResourcesConfig",
    "RunConfig",
    "SearchConfig",
    "SyntheticJob",
    "TaskConfig",
    "TinyPolicyConfig",
    "UserTask",
    "load_cluster",
    "load_recipe",
    "loss_catalog",
    "parse_loss_config",
    "resolve_resources",
    "resolve_storage",
]
