"""`pqsync directory import`: organisations, providers, services, patients, affiliations, users.

Validated first, then written in one transaction: idempotent and all-or-nothing.

People come and go: an affiliation with an `ended_on` date on or before the organisation's
today is ended (the partner no longer sees the patient; the consent it held is kept in the
patient's change history), a user with `active: false` or a past `ended_on` is deactivated
(sessions and tokens end at once). With `prune`, what the file no longer names is ended too:
the affiliations and users of the organisations the file lists, and staff users when the
file lists any. Consent changes are recorded in the change history (old to new).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import ColumnElement, Engine, delete, or_, select, update
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.lookup import organization_by_ref, patient_by_ref
from pqsync.db.tables import (
    Affiliation,
    CalendarFeed,
    Organization,
    PartnerUser,
    Patient,
    PatientActivity,
    Provider,
    ProviderIntakeQSettings,
    Service,
)
from pqsync.domain.roles import ROLES, STAFF_ROLES
from pqsync.services.passwords import hash_password, password_problem, verify_password
from pqsync.services.users import end_user_access


class DirectoryError(ValueError):
    """The directory file is invalid; the message names the bad entry (never patient data)."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OrganizationEntry(_Entry):
    slug: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1, max_length=200)
    timezone: str = "America/Denver"
    window_days_back: int | None = Field(None, ge=0, le=400)
    window_days_ahead: int | None = Field(None, ge=0, le=400)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown IANA time zone") from exc
        return value


class ProviderEntry(_Entry):
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    intakeq_practitioner_id: str | None = Field(None, min_length=1, max_length=64)


class ServiceEntry(_Entry):
    name: str = Field(min_length=1, max_length=200)
    intakeq_service_id: str = Field(min_length=1, max_length=64)


class PatientEntry(_Entry):
    id: uuid.UUID | None = None
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: EmailStr
    date_of_birth: date | None = None
    intakeq_client_id: int | None = Field(None, ge=1)


class RoiConsent(_Entry):
    status: Literal["active", "expired", "revoked", "missing"] = "missing"
    expires_on: date | None = None


class AffiliationEntry(_Entry):
    patient: str = Field(min_length=1)
    organization: str = Field(min_length=1)
    roi_consent: RoiConsent = RoiConsent()
    # The affiliation ends on this day (the organisation's): an import on or after it ends it.
    ended_on: date | None = None


class PartnerUserEntry(_Entry):
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    organization: str | None = None
    role: str
    password: str | None = None
    # An argon2 hash (from `pqsync users hash-password`), so the file holds no password.
    password_hash: str | None = Field(None, pattern=r"^\$argon2(id|i|d)\$")
    # `false` deactivates the user; `true` brings a deactivated user back.
    active: bool | None = None
    ended_on: date | None = None

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None) -> str | None:
        if value is not None and (problem := password_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_password(self) -> PartnerUserEntry:
        if self.password is not None and self.password_hash is not None:
            raise ValueError("give password or password_hash, not both")
        return self

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ROLES:
            raise ValueError(f"must be one of {', '.join(ROLES)}")
        return value


class DirectoryFile(_Entry):
    organizations: list[OrganizationEntry] = []
    providers: list[ProviderEntry] = []
    services: list[ServiceEntry] = []
    patients: list[PatientEntry] = []
    affiliations: list[AffiliationEntry] = []
    partner_users: list[PartnerUserEntry] = []


@dataclass
class ImportCounts:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    # One line per affiliation ended or user deactivated (ids and emails of users only).
    ended: list[str] = field(default_factory=list)

    def add(self, kind: str, outcome: str) -> None:
        bucket = getattr(self, outcome)
        bucket[kind] = bucket.get(kind, 0) + 1

    def total_changed(self) -> int:
        return sum(self.created.values()) + sum(self.updated.values())


def _describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = list(first.get("loc", ()))
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return f"invalid directory entry {where or '(file)'}: {first['msg']}"


def parse_directory(text: str) -> DirectoryFile:
    """Parse and validate a directory file's text; raise DirectoryError naming the bad entry."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DirectoryError(f"not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise DirectoryError("the directory file must be a JSON object")
    try:
        directory = DirectoryFile.model_validate(data)
    except ValidationError as exc:
        raise DirectoryError(_describe_validation_error(exc)) from None
    _check_duplicates(directory)
    return directory


def _check_duplicates(directory: DirectoryFile) -> None:
    def unique(kind: str, values: list[str]) -> None:
        seen: set[str] = set()
        for index, value in enumerate(values):
            if value in seen:
                raise DirectoryError(f"invalid directory entry {kind}[{index}]: duplicate entry")
            seen.add(value)

    unique("organizations", [o.slug for o in directory.organizations])
    unique("providers", [p.email.lower() for p in directory.providers])
    unique(
        "providers",
        [p.intakeq_practitioner_id for p in directory.providers if p.intakeq_practitioner_id],
    )
    unique("services", [s.intakeq_service_id for s in directory.services])
    unique("patients", [p.email.lower() for p in directory.patients])
    unique(
        "patients", [str(p.intakeq_client_id) for p in directory.patients if p.intakeq_client_id]
    )
    unique("partner_users", [u.email.lower() for u in directory.partner_users])


def _set(obj: Any, values: dict[str, Any]) -> bool:
    changed = False
    for key, value in values.items():
        if getattr(obj, key) != value:
            setattr(obj, key, value)
            changed = True
    return changed


class _Importer:
    def __init__(self, session: Session, counts: ImportCounts, now: datetime, by: str) -> None:
        self.session = session
        self.counts = counts
        self.now = now
        self.by = by
        self.named_affiliations: set[tuple[uuid.UUID, uuid.UUID]] = set()
        self.named_users: set[str] = set()

    def _upsert(self, kind: str, existing: Any, make: Any, values: dict[str, Any]) -> Any:
        if existing is None:
            obj = make(**values)
            self.session.add(obj)
            self.session.flush()
            self.counts.add(kind, "created")
            return obj
        self.counts.add(kind, "updated" if _set(existing, values) else "unchanged")
        return existing

    def organizations(self, entries: list[OrganizationEntry]) -> None:
        for entry in entries:
            found = self.session.scalar(select(Organization).filter_by(slug=entry.slug))
            self._upsert("organizations", found, Organization, entry.model_dump())

    def providers(self, entries: list[ProviderEntry]) -> None:
        for index, entry in enumerate(entries):
            email = entry.email.lower()
            found = self.session.scalar(select(Provider).filter_by(email=email))
            provider = self._upsert(
                "providers", found, Provider, {"email": email, "name": entry.name}
            )
            if entry.intakeq_practitioner_id:
                self._link_practitioner(index, provider, entry.intakeq_practitioner_id)

    def _link_practitioner(self, index: int, provider: Provider, practitioner_id: str) -> None:
        taken = self.session.scalar(
            select(ProviderIntakeQSettings).filter_by(intakeq_practitioner_id=practitioner_id)
        )
        if taken is not None and taken.provider_id != provider.id:
            raise DirectoryError(
                f"invalid directory entry providers[{index}]: IntakeQ practitioner is already "
                "mapped to another provider"
            )
        own = self.session.scalar(
            select(ProviderIntakeQSettings).filter_by(provider_id=provider.id)
        )
        self._upsert(
            "provider_intakeq_settings",
            own,
            ProviderIntakeQSettings,
            {"provider_id": provider.id, "intakeq_practitioner_id": practitioner_id},
        )

    def services(self, entries: list[ServiceEntry]) -> None:
        for entry in entries:
            found = self.session.scalar(
                select(Service).filter_by(intakeq_service_id=entry.intakeq_service_id)
            )
            self._upsert("services", found, Service, entry.model_dump())

    def patients(self, entries: list[PatientEntry]) -> None:
        for index, entry in enumerate(entries):
            email = entry.email.lower()
            by_email = self.session.scalar(select(Patient).filter_by(email=email))
            by_id = self.session.get(Patient, entry.id) if entry.id else None
            if by_id is not None and by_email is not None and by_id.id != by_email.id:
                raise DirectoryError(
                    f"invalid directory entry patients[{index}]: id and email belong to "
                    "two different patients"
                )
            found = by_id or by_email
            if entry.intakeq_client_id is not None:
                holder = self.session.scalar(
                    select(Patient).filter_by(intakeq_client_id=entry.intakeq_client_id)
                )
                if holder is not None and (found is None or holder.id != found.id):
                    raise DirectoryError(
                        f"invalid directory entry patients[{index}]: intakeq_client_id belongs "
                        "to another patient"
                    )
            values: dict[str, Any] = {
                "first_name": entry.first_name,
                "last_name": entry.last_name,
                "email": email,
                "date_of_birth": entry.date_of_birth,
            }
            # A learned ClientId is kept unless the file states one.
            if entry.intakeq_client_id is not None:
                values["intakeq_client_id"] = entry.intakeq_client_id
            if found is None and entry.id is not None:
                values["id"] = entry.id
            if found is not None and (
                found.email != email
                or values.get("intakeq_client_id", found.intakeq_client_id)
                != found.intakeq_client_id
            ):
                # Another identity in IntakeQ: what we store was fetched for the old one, so
                # the patient is not "synced" until a full fetch (the next run's backfill).
                self.session.execute(
                    update(Affiliation)
                    .where(Affiliation.patient_id == found.id)
                    .values(last_practiceq_sync_at=None)
                )
            self._upsert("patients", found, Patient, values)

    def _patient_ref(self, where: str, ref: str) -> Patient:
        patient = patient_by_ref(self.session, ref)
        if patient is None:
            raise DirectoryError(f"invalid directory entry {where}.patient: no such patient")
        return patient

    def _org_ref(self, where: str, ref: str) -> Organization:
        org = organization_by_ref(self.session, ref)
        if org is None:
            raise DirectoryError(
                f"invalid directory entry {where}.organization: no such organization"
            )
        return org

    def affiliations(self, entries: list[AffiliationEntry]) -> None:
        for index, entry in enumerate(entries):
            where = f"affiliations[{index}]"
            patient = self._patient_ref(where, entry.patient)
            org = self._org_ref(where, entry.organization)
            self.named_affiliations.add((patient.id, org.id))
            found = self.session.scalar(
                select(Affiliation).filter_by(patient_id=patient.id, organization_id=org.id)
            )
            if entry.ended_on is not None and entry.ended_on <= self._today(org):
                if found is not None:
                    self._end_affiliation(found, org, f"ended on {entry.ended_on.isoformat()}")
                else:
                    self.counts.add("affiliations", "unchanged")
                continue
            if found is not None:
                self._record_consent_change(found, org, entry.roi_consent)
            self._upsert(
                "affiliations",
                found,
                Affiliation,
                {
                    "patient_id": patient.id,
                    "organization_id": org.id,
                    "roi_consent_status": entry.roi_consent.status,
                    "roi_consent_expires_on": entry.roi_consent.expires_on,
                },
            )

    def _today(self, org: Organization) -> date:
        return self.now.astimezone(ZoneInfo(org.timezone)).date()

    def _record_consent_change(
        self, affiliation: Affiliation, org: Organization, consent: RoiConsent
    ) -> None:
        old = (affiliation.roi_consent_status, affiliation.roi_consent_expires_on)
        new = (consent.status, consent.expires_on)
        if old == new:
            return

        def shown(state: tuple[str, date | None]) -> str:
            return f"{state[0]} (expires {state[1].isoformat()})" if state[1] else state[0]

        self.session.add(
            PatientActivity(
                patient_id=affiliation.patient_id,
                activity_type="consent_changed",
                description=(
                    f"ROI consent with {org.name} changed from {shown(old)} to {shown(new)} "
                    f"by {self.by}"
                ),
                changes={
                    "organization_id": str(org.id),
                    "roi_consent_status": {"old": old[0], "new": new[0]},
                    "roi_consent_expires_on": {
                        "old": old[1].isoformat() if old[1] else None,
                        "new": new[1].isoformat() if new[1] else None,
                    },
                    "by": self.by,
                },
                actor="cli",
                created_at=self.now,
            )
        )

    def _end_affiliation(self, affiliation: Affiliation, org: Organization, why: str) -> None:
        self.session.add(
            PatientActivity(
                patient_id=affiliation.patient_id,
                activity_type="affiliation_ended",
                description=f"No longer with {org.name} ({why}), by {self.by}",
                changes={
                    "organization_id": str(org.id),
                    "roi_consent_status": affiliation.roi_consent_status,
                    "roi_consent_expires_on": affiliation.roi_consent_expires_on.isoformat()
                    if affiliation.roi_consent_expires_on
                    else None,
                    "affiliated_since": affiliation.created_at.isoformat(),
                    "by": self.by,
                },
                actor="cli",
                created_at=self.now,
            )
        )
        self.session.delete(affiliation)
        self.session.flush()
        self.counts.ended.append(
            f"affiliation of patient {affiliation.patient_id} with {org.slug} ended ({why})"
        )

    def _deactivate(self, user: PartnerUser, why: str) -> None:
        if not user.is_active:
            return
        done = end_user_access(self.session, user, by=self.by, now=self.now)
        self.counts.ended.append(
            f"user {done.email} deactivated ({why}): {done.sessions_ended} session(s) ended, "
            f"{done.tokens_revoked} token(s) revoked"
        )

    def partner_users(self, entries: list[PartnerUserEntry]) -> None:
        for index, entry in enumerate(entries):
            where = f"partner_users[{index}]"
            org_id: uuid.UUID | None = None
            if entry.role in STAFF_ROLES:
                if entry.organization:
                    raise DirectoryError(
                        f"invalid directory entry {where}.organization: a {entry.role} belongs "
                        "to no organization"
                    )
            elif not entry.organization:
                raise DirectoryError(
                    f"invalid directory entry {where}.organization: required for role {entry.role}"
                )
            else:
                org_id = self._org_ref(where, entry.organization).id
            email = entry.email.lower()
            self.named_users.add(email)
            found = self.session.scalar(select(PartnerUser).filter_by(email=email))
            values: dict[str, Any] = {
                "email": email,
                "name": entry.name,
                "organization_id": org_id,
                "role": entry.role,
            }
            if entry.password is not None and (
                found is None or not verify_password(found.password_hash, entry.password)
            ):
                values["password_hash"] = hash_password(entry.password)
            if entry.password_hash is not None:
                values["password_hash"] = entry.password_hash
            ended = entry.active is False or (
                entry.ended_on is not None and entry.ended_on <= self.now.date()
            )
            if found is not None and found.organization_id != org_id:
                # Moved out of the organisation: the calendar address was its residents'.
                self.session.execute(delete(CalendarFeed).where(CalendarFeed.user_id == found.id))
            if found is not None and not found.is_active and entry.active and not ended:
                values |= {"is_active": True, "deactivated_at": None, "deactivated_by": None}
            user = self._upsert("partner_users", found, PartnerUser, values)
            if ended:
                why = "active: false" if entry.active is False else f"ended on {entry.ended_on}"
                self._deactivate(user, why)

    def prune(self, directory: DirectoryFile) -> None:
        """End what the file no longer names, within the organisations it lists (and the
        staff users, when it lists any)."""
        slugs = [entry.slug for entry in directory.organizations]
        orgs = list(self.session.scalars(select(Organization).where(Organization.slug.in_(slugs))))
        by_id = {org.id: org for org in orgs}
        for affiliation in self.session.scalars(
            select(Affiliation)
            .where(Affiliation.organization_id.in_(by_id))
            .order_by(Affiliation.created_at)
        ).all():
            if (affiliation.patient_id, affiliation.organization_id) not in self.named_affiliations:
                org = by_id[affiliation.organization_id]
                self._end_affiliation(affiliation, org, "no longer in the directory file")
        staff_listed = any(u.role in STAFF_ROLES for u in directory.partner_users)
        users = select(PartnerUser).where(PartnerUser.is_active.is_(True))
        scope: ColumnElement[bool] = PartnerUser.organization_id.in_(by_id)
        if staff_listed:
            scope = or_(scope, PartnerUser.organization_id.is_(None))
        for user in self.session.scalars(users.where(scope).order_by(PartnerUser.email)).all():
            if user.email not in self.named_users:
                self._deactivate(user, "no longer in the directory file")


def import_directory(
    engine: Engine,
    directory: DirectoryFile,
    *,
    prune: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
    by: str = "directory import",
) -> ImportCounts:
    """Write a validated directory in one transaction; any error rolls everything back, and
    so does `dry_run` (the counts say what would have changed)."""
    counts = ImportCounts()
    with Session(engine) as session:
        begin_write(session)
        importer = _Importer(session, counts, now or datetime.now(UTC), by)
        importer.organizations(directory.organizations)
        importer.providers(directory.providers)
        importer.services(directory.services)
        importer.patients(directory.patients)
        importer.affiliations(directory.affiliations)
        importer.partner_users(directory.partner_users)
        if prune:
            importer.prune(directory)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return counts


def import_directory_file(
    engine: Engine, path: Path, *, prune: bool = False, dry_run: bool = False
) -> ImportCounts:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DirectoryError(f"{path} is not UTF-8 text") from None
    return import_directory(engine, parse_directory(text), prune=prune, dry_run=dry_run)
