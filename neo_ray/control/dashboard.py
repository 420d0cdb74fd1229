"""The live dashboard: `GET /` answers one self-contained page built from the static files.

The stylesheet and the script are inlined into the HTML, so the page costs one request and
the Content-Security-Policy can name exactly those two by hash: the browser then refuses any
other script, style, image source, frame or request to another origin, whatever a repository
URL or an error message shown on the page contains.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@dataclass(frozen=True)
class Page:
    """The assembled page and the security policy that allows exactly its own code."""

    html: str
    policy: str


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def page() -> Page:
    """Read the static files once per process and inline the stylesheet and script."""
    static = resources.files("neo_ray.control") / "static"
    css = (static / "dashboard.css").read_text(encoding="utf-8")
    js = (static / "dashboard.js").read_text(encoding="utf-8")
    html = (static / "index.html").read_text(encoding="utf-8")
    html = html.replace("<!--STYLE-->", f"<style>{css}</style>", 1)
    html = html.replace("<!--SCRIPT-->", f"<script>{js}</script>", 1)
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_digest(js)}",
            f"style-src {_digest(css)}",
            "img-src data:",
            "connect-src 'self'",
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return Page(html, policy)


@router.get("/", response_class=HTMLResponse, summary="The live dashboard page")
def dashboard() -> HTMLResponse:
    """Workers, queue, history, a submit form and search, refreshed every 2 s by the page."""
    built = page()
    return HTMLResponse(
        built.html,
        headers={
            "Content-Security-Policy": built.policy,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
