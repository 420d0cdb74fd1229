"""The dashboard page as the control plane serves it, without a browser or a running system."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from neo_ray.control.api import create_app


def get_page() -> httpx.Response:
    """GET / from the app, in process; no state configured, as before the plane is wired."""

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://neo") as http:
            return await http.get("/")

    # A thread of its own: a test session may already run an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fetch()).result()


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_page_is_one_self_contained_document() -> None:
    reply = get_page()
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    html = reply.text
    assert "<title>neo-ray dashboard</title>" in html
    assert "<!--STYLE-->" not in html and "<!--SCRIPT-->" not in html
    # Nothing is loaded from anywhere: no src or href but the page's own anchors and data URLs.
    assert not re.search(r"""\bsrc\s*=""", html)
    assert re.findall(r"""href="([^"]*)\"""", html) == ["data:,", "#submit"]
    # The only absolute URL is the SVG namespace, which the browser never fetches.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) == {"http://www.w3.org/2000/svg"}


def test_policy_allows_exactly_the_inlined_script_and_style() -> None:
    reply = get_page()
    policy = dict(
        part.strip().split(" ", 1) for part in reply.headers["content-security-policy"].split(";")
    )
    (script,) = re.findall(r"<script>(.*?)</script>", reply.text, re.S)
    (style,) = re.findall(r"<style>(.*?)</style>", reply.text, re.S)
    assert policy["script-src"] == _sha256(script)
    assert policy["style-src"] == _sha256(style)
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["form-action"] == "'none'"
