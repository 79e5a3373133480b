"""The web dashboard (``shim dashboard``): a live view of a namespace's runs as DAGs, its
workers and each task, with cancel / retry / pause / resume, fed by the durable event history
over server-sent events.

* :func:`create_app` — the Starlette application (page, JSON routes, live stream, ``/metrics``);
* :class:`DashboardServer` — serves it with uvicorn on a socket from :func:`listen`;
* :func:`check_binding` — refuses a non-loopback address without a token (of 16 characters
  or more).
"""

from shim_core.dashboard.app import create_app
from shim_core.dashboard.guard import TOKEN_ENV
from shim_core.dashboard.server import DashboardServer, check_binding, listen

__all__ = ["TOKEN_ENV", "DashboardServer", "check_binding", "create_app", "listen"]
