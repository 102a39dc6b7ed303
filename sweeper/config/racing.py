"""The ``search.racing`` block: spend seeds where the ranking is close (see ``sweeper.racing``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RacingConfig(BaseModel):
    """Racing over seeds: every config starts with ``min_seeds``; a config confidently worse
    than the leader (at ``confidence``) gets no more, the others get one more seed at a time
    until they separate or reach ``max_seeds``. Seeds are handed out in the order of
    ``search.seeds``, which must hold at least ``max_seeds``."""

    model_config = ConfigDict(extra="forbid")

    min_seeds: int = Field(
        2, ge=2, le=1000, description="Seeds every config gets before any comparison (>= 2)."
    )
    max_seeds: int = Field(10, ge=2, le=1000, description="Most seeds a config gets.")
    confidence: float = Field(
        0.95,
        ge=0.5,
        lt=1.0,
        description="1 - the level of the one-sided test that drops a config worse than the "
        "leader (Holm-corrected over the configs compared).",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> RacingConfig:
        if self.min_seeds > self.max_seeds:
            raise ValueError(
                f"racing.min_seeds ({self.min_seeds}) exceeds racing.max_seeds ({self.max_seeds})"
            )
        return self
