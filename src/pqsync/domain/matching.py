"""Which of our patients an IntakeQ record belongs to: pure, no I/O.

IntakeQ's `client` filter is a partial match and is never trusted. A record is a patient's
by IntakeQ ClientId; until that is known, by case-insensitive email (plus-addresses are
distinct addresses), and the ClientId is learned on that first match.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class PatientIdentity:
    """What matching knows of a patient."""

    id: uuid.UUID
    email: str
    client_id: int | None = None


class PatientMatcher:
    """Exact matching of IntakeQ clients to patients: ClientId first, else email."""

    def __init__(self, patients: Iterable[PatientIdentity]) -> None:
        self.by_client_id: dict[int, PatientIdentity] = {}
        self.by_email: dict[str, PatientIdentity] = {}
        for patient in patients:
            if patient.client_id is not None:
                self.by_client_id[patient.client_id] = patient
            self.by_email[patient.email.lower()] = patient
        # ClientIds learned since the last `take_learned`, to be stored with the page.
        self._learned: dict[uuid.UUID, int] = {}

    def owner_of(self, client_id: int | None, email: str | None) -> PatientIdentity | None:
        """Whose record this is, without learning anything."""
        if client_id is not None and client_id in self.by_client_id:
            return self.by_client_id[client_id]
        patient = self.by_email.get(email.lower()) if email else None
        if patient is not None and patient.client_id not in (None, client_id):
            return None  # our email now belongs to another IntakeQ client
        return patient

    def match(self, client_id: int | None, email: str | None) -> PatientIdentity | None:
        """Whose record this is; an email match teaches the patient's ClientId."""
        patient = self.owner_of(client_id, email)
        if patient is not None and patient.client_id is None and client_id is not None:
            patient.client_id = client_id
            self.by_client_id[client_id] = patient
            self._learned[patient.id] = client_id
        return patient

    def take_learned(self) -> dict[uuid.UUID, int]:
        """ClientIds learned since the last call (patient id -> ClientId)."""
        learned, self._learned = self._learned, {}
        return learned
