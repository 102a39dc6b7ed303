"""Follow a sweep in the browser: ``sweeper dashboard`` (live) and ``sweeper report`` (one
offline HTML file) show the same views.

- :mod:`sweeper.dashboard.data` -- the data layer over the ``rank`` and ``store`` readers;
- :mod:`sweeper.dashboard.views` -- the views as JSON payloads holding Plotly figures;
- :mod:`sweeper.dashboard.page` -- the HTML page and its script (``static/``);
- :mod:`sweeper.dashboard.server` -- the live web app (Starlette + uvicorn).
"""

from sweeper.dashboard.data import Snapshot, SweepData

__all__ = ["Snapshot", "SweepData"]
