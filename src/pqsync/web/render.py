"""Server-rendered pages: the Jinja2 environment, how times are shown, and the headers
every page carries (a strict Content-Security-Policy: no inline script or style)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

WEB_DIR = Path(__file__).parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def appointment_time(moment: datetime | None) -> str:
    """`Nov 15, 2025 at 2:00 PM` (the moment is already in the organisation's zone)."""
    if moment is None:
        return ""
    clock = moment.strftime("%I:%M %p").lstrip("0")
    return f"{moment.strftime('%b')} {moment.day}, {moment.year} at {clock}"


def relative_time(moment: datetime | None, now: datetime) -> str:
    """`just now`, `5 minutes ago`, `2 hours ago`, `3 days ago` (or `in ...` ahead)."""
    if moment is None:
        return "Never"
    seconds = int((now - moment).total_seconds())
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            text = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {text}" if ahead else f"{text} ago"
    return "just now"  # pragma: no cover - the loop always answers for >= 60 s


def consent_words(state: str, expires_on: date | None) -> str:
    """Why appointment details are hidden, told apart: none on file, expired (on which
    date), or revoked."""
    if state == "revoked":
        return "ROI consent required: revoked"
    if state == "expired":
        when = (
            f" on {expires_on.strftime('%b')} {expires_on.day}, {expires_on.year}"
            if expires_on
            else ""
        )
        return f"ROI consent required: expired{when}"
    return "ROI consent required: none on file"


def zone_note(zone: ZoneInfo | str, now: datetime) -> str:
    """`Times are in America/Denver time (MST).`: said on every page that shows times."""
    tz = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
    return f"Times are in {tz.key} time ({now.astimezone(tz).strftime('%Z')})."


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.filters["appointment_time"] = appointment_time
    templates.env.filters["relative_time"] = relative_time
    templates.env.globals["consent_words"] = consent_words
    templates.env.globals["zone_note"] = zone_note
    templates.env.globals["role_labels"] = ROLE_LABELS
    return templates


ROLE_LABELS = {
    "staff_admin": "Clinic staff",
    "staff_viewer": "Clinic staff (read only)",
    "partner_admin": "Partner admin",
    "case_manager": "Case manager",
    "viewer": "Viewer",
}


def page(
    templates: Jinja2Templates,
    request: Request,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    """Render a template with the page headers."""
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(PAGE_HEADERS)
    return response
