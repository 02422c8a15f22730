"""The dashboard for the people who run deepmem: what is asked, where it fails, how retraining goes.

``build_dashboard`` (data.py) computes it from the feedback log; ``render_page`` (render.py) turns it
into one self-contained HTML page with matplotlib plots. Served at /admin by ``deepmem serve`` and
written by ``deepmem report``.
"""

from .data import Dashboard, build_dashboard
from .render import CONTENT_SECURITY_POLICY, render_page
from .report import DEFAULT_DAYS, dashboard_page

__all__ = ["Dashboard", "build_dashboard", "render_page", "dashboard_page", "CONTENT_SECURITY_POLICY",
           "DEFAULT_DAYS"]
