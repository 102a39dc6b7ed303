"""The study and trial user attributes sweeper writes (visible in optuna-dashboard)."""

ATTR_GRID_ENQUEUED = "sweeper_grid_enqueued"
"""Study: the grid's points have all been enqueued."""
ATTR_SEARCH = "sweeper_search"
"""Study: ``search.kind``."""
ATTR_PARAM_KEYS = "sweeper_param_keys"
"""Study: the recipe's searched dotted keys."""
ATTR_RECOVERED = "sweeper_recovered"
"""Trial: failed by a resume (the controller ended while it ran); it does not count towards
``n_trials``, its rerun does."""
ATTR_RERUN_OF = "sweeper_rerun_of"
"""Trial: the number of the interrupted trial whose params it runs again."""
ATTR_ERROR = "error"
"""Trial: why it failed or was pruned."""
ATTR_PRUNED_VALUE = "sweeper_value_at_prune"
"""Trial: the value given when it was told PRUNED."""
ATTR_RACING = "racing"
"""Trial: why its race ended (``search.racing``)."""

INTERRUPTED = "interrupted"
"""How the error of a trial the controller did not finish begins in trials.parquet (the
controller ended, or ``sweeper stop``): such a trial is rerun by ``sweeper resume``."""
