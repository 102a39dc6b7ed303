"""Derived seeds: one independent, reproducible stream per purpose.

A job seeds every random stream it uses (prompts, sampling, loss noise, shuffles, eval) from
``derive_seed(job_seed, purpose, ...)``, so e.g. changing how often it evaluates does not change
its training trajectory; tasks derive their fixed held-out sets the same way.
"""

from __future__ import annotations

import hashlib
import json


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (JSON-able, else by ``str``), the same in every process and
    on every machine (unlike ``hash``)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
