"""``sweeper dashboard``: a local web app over one sweep dir (Starlette, served by uvicorn).

Routes (all GET):

- ``/`` the page; ``/trial/N`` redirects to the page's trial route ``/#/trial/N``;
- ``/static/plotly.min.js`` (the ``plotly`` package's bundled copy), ``/static/dashboard.js``,
  ``/static/dashboard.css``;
- ``/api/sweep`` name, location, objective, recipe text;
- ``/api/overview?top=K&since=VERSION`` progress, ranking, curves of the K best, Pareto front,
  search space (``{"unchanged": true}`` when nothing changed since ``VERSION``);
- ``/api/importance`` parameter importance; ``/api/trial/N`` one trial's page (404 if none).

The page polls ``/api/overview`` (or its trial) every two seconds. Views are computed once per
sweep version (:class:`~sweeper.dashboard.data.SweepData` re-reads the sweep dir at most once a
second) and shared by every client.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sweeper.dashboard import views
from sweeper.dashboard.data import SweepData
from sweeper.dashboard.page import ASSETS, asset, live_page, plotly_js, script_json
from sweeper.errors import InputError
from sweeper.store import RECIPE_YAML, SweepStore

log = logging.getLogger(__name__)

DEFAULT_PORT = 8050


class _ViewCache:
    """The views of the latest sweep version, computed once for every client."""

    def __init__(self, data: SweepData) -> None:
        self.data = data
        self._lock = threading.Lock()
        self._version = ""
        self._views: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...], build: Callable[[Any], Any]) -> tuple[str, Any]:
        snap = self.data.snapshot()
        with self._lock:
            if snap.version != self._version:
                self._version, self._views = snap.version, {}
            if key not in self._views:
                self._views[key] = build(snap)
            return snap.version, self._views[key]


def _read_quietly(data: SweepData) -> None:
    """Refresh ``data`` in the background; a failure is logged (the page shows it when it asks)."""
    try:
        data.snapshot()
    except Exception:
        log.exception("reading %s failed", data.store.uri)


def _json(payload: Any, status_code: int = 200) -> Response:
    # Plotly's encoder: numpy arrays, NaN and infinities (as null) included.
    return Response(script_json(payload), status_code, media_type="application/json")


def create_app(store: SweepStore, data: SweepData | None = None) -> Starlette:
    """The dashboard of ``store`` as an ASGI app."""
    data = data or SweepData(store)
    cache = _ViewCache(data)
    recipe_text = store.read_text(RECIPE_YAML) if store.exists(RECIPE_YAML) else ""

    def index(request: Request) -> Response:
        # Read the sweep while the browser loads plotly.js: the page's first request for data
        # then finds it read (or being read), instead of starting only when the script runs.
        threading.Thread(target=_read_quietly, args=(data,), daemon=True).start()
        return HTMLResponse(live_page(), headers={"Cache-Control": "no-store"})

    def trial_page(request: Request) -> Response:
        return RedirectResponse(f"/#/trial/{request.path_params['trial']}")

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        cached = {"Cache-Control": "max-age=86400"}
        if name == "plotly.min.js":
            return Response(plotly_js(), media_type="text/javascript", headers=cached)
        if name in ASSETS:
            return Response(
                asset(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"}
            )
        return JSONResponse({"error": f"no static file {name}"}, 404)

    def sweep(request: Request) -> Response:
        _, info = cache.get(("sweep",), lambda snap: views.sweep_info(snap, recipe_text))
        return _json(info)

    def overview(request: Request) -> Response:
        try:
            top = int(request.query_params.get("top", views.DEFAULT_TOP))
        except ValueError:
            return JSONResponse({"error": "top must be an integer"}, 400)
        top = min(max(top, 1), views.MAX_TOP)
        since = request.query_params.get("since")
        version, payload = cache.get(("overview", top), lambda snap: views.overview(snap, top))
        if since and since == version:
            return _json({"version": version, "unchanged": True})
        return _json(payload)

    def importance(request: Request) -> Response:
        _, payload = cache.get(("importance",), views.importance)
        return _json(payload)

    def trial(request: Request) -> Response:
        number = int(request.path_params["trial"])
        _, payload = cache.get(("trial", number), lambda snap: views.trial_view(snap, number))
        if payload is None:
            return JSONResponse({"error": f"no trial {number} in {store.name}"}, 404)
        return _json(payload)

    def favicon(request: Request) -> Response:
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/favicon.ico", favicon),
            Route("/trial/{trial:int}", trial_page),
            Route("/static/{name}", static),
            Route("/api/sweep", sweep),
            Route("/api/overview", overview),
            Route("/api/importance", importance),
            Route("/api/trial/{trial:int}", trial),
        ]
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free one); InputError naming the
    problem when it cannot be had (port taken, no such address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(
    store: SweepStore,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard of ``store`` until interrupted (Ctrl-C). The sweep is read in the
    background at once, so the first page view usually finds it read. ``on_ready(url)`` is called
    once the socket listens."""
    import uvicorn

    sock = bind(host, port)
    data = SweepData(store)
    app = create_app(store, data)

    threading.Thread(target=_read_quietly, args=(data,), daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    if on_ready is not None:
        on_ready(url_of(sock))
    server.run(sockets=[sock])
