"""The filters of `GET /appointments` as the simulator reads them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Filter:
    """One listing's query string, parsed."""

    client: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    status: str | None = None
    practitioner_email: str | None = None
    updated_since: date | None = None
    deleted_only: bool = False
