"""Server-rendered pages: the Jinja2 templates under templates/ and the files under static/, both
inside the package, so a clinic's gateway loads nothing from anywhere else (clinics run air-gapped).

Why Jinja2 and htmx, not a single-page app: every page is a list or a table the gateway already
has on the server; htmx (about 50 KB, no build step, 0BSD) swaps a fragment in after a form is
sent and every form still works without it, so the pages stay keyboard operable and readable with
scripts off. Every page is sent with a Content-Security-Policy that allows only this origin's
scripts and styles (no inline script), no framing, and no referrer, so a sign-in link or an id in a
URL does not leak to another site.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
# htmx, vendored: npm package htmx.org 2.0.11, dist/htmx.min.js, licence 0BSD (static/htmx.LICENSE)
HTMX_VERSION = "2.0.11"

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class Views:
    def __init__(self, templates: Path = TEMPLATES) -> None:
        self.environment = Environment(loader=FileSystemLoader(templates), autoescape=select_autoescape(
            default=True, default_for_string=True), undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.headers = SECURITY_HEADERS

    def allow_form_redirects_to(self, origin: str) -> None:
        """Lets a form's answer redirect to `origin` (the identity provider's, for Sign out to end its
        session too): browsers hold a form's redirects to the page's CSP `form-action`."""
        policy = self.headers["Content-Security-Policy"].replace("form-action 'self'", f"form-action 'self' {origin}")
        self.headers = {**self.headers, "Content-Security-Policy": policy}

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("signed_in", getattr(request.state, "signed_in", None))
        context.setdefault("csrf_token", getattr(context["signed_in"], "csrf_token", ""))
        # who the page is for: the session's person, or a bearer token's (which has no session)
        context.setdefault("principal", context["signed_in"].principal if context["signed_in"] is not None
                           else getattr(request.state, "principal", None))
        for name in ("said", "problem", "problem_for"):  # what a worklist card may carry
            context.setdefault(name, None)
        html = self.environment.get_template(template).render(request_path=request.url.path, **context)
        return HTMLResponse(html, status, headers=self.headers)

    def message(self, request: Request, status: int, title: str, words: str) -> HTMLResponse:
        return self.render(request, "message.html", status, title=title, words=words, code=status)


def static_router(folder: Path = STATIC) -> APIRouter:
    """The package's static files by name: read once at start, no paths from the request."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            media = mimetypes.guess_type(path.name)[0] or "text/plain"
            if media.startswith("text/") or media == "application/javascript":
                media += "; charset=utf-8"
            files[path.name] = (path.read_bytes(), media)
    router = APIRouter(include_in_schema=False)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        found = files.get(name)
        if found is None:
            return Response("not found", 404, media_type="text/plain")
        body, media = found
        return Response(body, 200, media_type=media, headers={
            "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})

    return router
