"""The few HTML pages the API serves to a person's browser: the end of an OAuth connection, good or bad.

Every value is HTML-escaped; the only script and style are the constants below, allowed by their hashes in a
Content-Security-Policy that allows nothing else (no other script, no frames, no forms, no outside requests).
The success page shows the instance's MCP URL, a bearer capability: it is never cached (``no-store``), never
sent on as a Referer, and the page cannot be framed (clickjacking the copy button).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}"
    "h1{font-size:1.4rem}.url{display:flex;gap:.5rem;align-items:center}"
    "code{background:#f3f3f3;padding:.4rem .6rem;border-radius:4px;word-break:break-all;flex:1}"
    "button{padding:.4rem .8rem;cursor:pointer}.muted{color:#666;font-size:.9rem}"
)
# Reads the URL from the page (no data in the script, so its hash never changes) and copies it.
_SCRIPT = (
    "document.getElementById('copy').addEventListener('click',function(){"
    "var b=this,t=document.getElementById('mcp-url').textContent;"
    "navigator.clipboard.writeText(t).then(function(){b.textContent='Copied';},"
    "function(){b.textContent='Select and copy the URL';});});"
)


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; img-src 'none'; "
    "connect-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Page:
    status: int
    html: str


def _document(title: str, body: str, *, script: bool = False) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        "<meta name=\"referrer\" content=\"no-referrer\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n"
        + (f"<script>{_SCRIPT}</script>\n" if script else "")
        + "</body></html>\n"
    )


def connected(display_name: str, account: str | None, mcp_url: str) -> Page:
    """200: "Connected to GitHub as @octocat — your MCP URL: ..." with a copy button."""
    who = f" as {escape(account)}" if account else ""
    body = (
        f"<h1>Connected to {escape(display_name)}{who}</h1>\n"
        "<p>Your MCP URL:</p>\n"
        f"<div class=\"url\"><code id=\"mcp-url\">{escape(mcp_url)}</code>"
        "<button id=\"copy\" type=\"button\">Copy</button></div>\n"
        "<p class=\"muted\">Anyone with this URL can use the connected account through it: keep it like a "
        "password. You can close this page.</p>"
    )
    return Page(200, _document(f"Connected to {display_name}", body, script=True))


def failed(status: int, title: str, message: str, code: str) -> Page:
    """A failure: what happened and what to do, for a person; the code for whoever reports it."""
    body = (
        f"<h1>{escape(title)}</h1>\n<p>{escape(message)}</p>\n"
        f"<p class=\"muted\">Error code: <code>{escape(code)}</code></p>"
    )
    return Page(status, _document(title, body))
