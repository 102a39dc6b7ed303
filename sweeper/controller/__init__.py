"""The Ray-based controller of a sweep (DESIGN §4), in parts with one job each:

- ``loop``: :class:`Controller`, the loop that ties the parts together;
- ``trials``: the trial book -- trial and attempt states, the job queue, the one finish path;
- ``pool``: warm worker actors, capacity, dispatch and draining (``JobPool``: what the loop
  needs of a pool);
- ``simulated``: a simulated cluster on a discrete-event clock, a ``JobPool`` for benchmarks
  and tests at scale;
- ``writer``: what the controller writes into the sweep dir (tables, trace parts, status);
- ``ray_session``: connecting to Ray (a private embedded Ray by default).
"""

from sweeper.controller.loop import Controller
from sweeper.controller.ray_session import ray_session
from sweeper.controller.trials import TrialState
from sweeper.controller.writer import CONTROL_FILE, now_iso, write_control

__all__ = ["CONTROL_FILE", "Controller", "TrialState", "now_iso", "ray_session", "write_control"]
