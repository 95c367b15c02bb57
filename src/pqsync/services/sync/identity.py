"""Which of our patients an IntakeQ record belongs to, and when a patient's ClientId changes.

IntakeQ's `client` filter is a partial match and is never trusted. The rules:

1. A record whose ClientId is a patient's is that patient's (every patient, not only the
   run's: a ClientId held by another organisation's patient is never taken by a second one).
2. Otherwise a record carrying a patient's email (case-insensitive; plus-addresses are
   distinct) teaches that patient's ClientId, but only when exactly one IntakeQ client
   carries the email (`GET /clients?search=`, asked once per email and run). Two or more
   means neither is learned, nothing of either is written, and the patient is flagged for
   staff ("2 IntakeQ clients share this email").
3. A patient whose ClientId is known follows a new one only when IntakeQ lists an
   appointment we store for them (same Id) under the new ClientId with their email (profiles
   merged), or when the new one is the only client left with their email (a profile
   re-created); the change is audited. A record with their email under another ClientId
   otherwise is someone else's (a family member) while their known ClientId still carries
   the email; when it no longer does and several clients carry it, nobody can say which is
   theirs: neither is learned and the patient is flagged, as in rule 2.
4. Anything else is not our patient's.

Pure but for the `lookup` callable; the writer asks `prepare` before its write transaction
so no request is made while the database is locked.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class PatientIdentity:
    """What identity knows of a patient."""

    id: uuid.UUID
    email: str
    client_id: int | None = None


@dataclass(frozen=True)
class ClientIdChange:
    patient_id: uuid.UUID
    old: int | None
    new: int


# How many IntakeQ clients carry one email, by ClientId: the answer to `GET /clients?search=`
# filtered to exact (case-insensitive) email matches.
ClientLookup = Callable[[str], set[int]]

SHARED_EMAIL = "{n} IntakeQ clients share this email"


@dataclass
class Identities:
    """Every patient's identity for one run; `scope` are the patients the run syncs."""

    patients: Iterable[PatientIdentity]
    scope: set[uuid.UUID]
    lookup: ClientLookup | None = None
    # Questions to IntakeQ this run may still ask (one request each; see `lookup_budget`):
    # for patients whose ClientId is not known, and about a known patient's email under
    # another ClientId.
    lookups_left: int = 0
    follow_lookups_left: int = 0
    by_client_id: dict[int, PatientIdentity] = field(init=False)
    by_email: dict[str, PatientIdentity] = field(init=False)
    by_id: dict[uuid.UUID, PatientIdentity] = field(init=False)
    # Email -> ClientIds carrying it, as IntakeQ answered this run.
    _carriers: dict[str, set[int]] = field(init=False, default_factory=dict)
    # Patients whose email more than one IntakeQ client carries: patient id -> how many.
    shared: dict[uuid.UUID, int] = field(init=False, default_factory=dict)
    # ClientIds learned or followed since the last `take_changes`.
    _changes: list[ClientIdChange] = field(init=False, default_factory=list)
    # Patients whose ClientId could not be confirmed this run (no question left to ask).
    unconfirmed: set[uuid.UUID] = field(init=False, default_factory=set)
    # (patient, ClientId) pairs refused because another patient holds the ClientId.
    held_elsewhere: set[tuple[uuid.UUID, int]] = field(init=False, default_factory=set)
    # Patients whose email several IntakeQ clients carry besides their known ClientId: the
    # carriers seen (see `contested`).
    _contested: dict[uuid.UUID, set[int]] = field(init=False, default_factory=dict)
    # Patients with such a record nobody could ask about, and those whose own ClientId was
    # listed with their email this run (see `unasked`).
    _unasked: set[uuid.UUID] = field(init=False, default_factory=set)
    _email_on_known: set[uuid.UUID] = field(init=False, default_factory=set)
    # Records carrying a known patient's email under another ClientId that were passed
    # over this run: patient id -> those ClientIds; and the patients whose ClientId then
    # followed one of them (see `followed_late`).
    _passed_over: dict[uuid.UUID, set[int]] = field(init=False, default_factory=dict)
    _followed_late: set[uuid.UUID] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.by_client_id = {}
        self.by_email = {}
        self.by_id = {}
        for patient in self.patients:
            self.by_id[patient.id] = patient
            if patient.client_id is not None:
                self.by_client_id[patient.client_id] = patient
            self.by_email[patient.email.lower()] = patient

    # -- before the write transaction: questions to IntakeQ --------------------------------

    def needs_lookup(self, client_id: int | None, email: str | None) -> str | None:
        """The email to ask IntakeQ about before this record can be judged, if any."""
        if client_id is None or client_id in self.by_client_id or not email:
            return None
        patient = self.by_email.get(email.lower())
        if patient is None or self.lookup is None or patient.id not in self.scope:
            return None
        left = self.lookups_left if patient.client_id is None else self.follow_lookups_left
        if left <= 0 and not self._answers_free():
            return None
        key = email.lower()
        return None if key in self._carriers else key

    def prepare(self, client_id: int | None, email: str | None) -> None:
        """Ask IntakeQ (once per email and run) who carries this record's email."""
        key = self.needs_lookup(client_id, email)
        if key is not None and self.lookup is not None:
            if self.by_email[key].client_id is None:
                self.lookups_left -= 1
            else:
                self.follow_lookups_left -= 1
            self._carriers[key] = self.lookup(key)

    def unknown_to_intakeq(self, patient_id: uuid.UUID) -> bool:
        """Whether IntakeQ has no client at all with the patient's email: asked (once a run,
        out of the questions for patients whose ClientId is not known) only for a patient
        whose ClientId is not known; False whenever that cannot be said for sure."""
        patient = self.by_id.get(patient_id)
        if patient is None or patient.client_id is not None or self.lookup is None:
            return False
        key = patient.email.lower()
        if key not in self._carriers:
            if self.lookups_left <= 0 and not self._answers_free():
                return False
            self.lookups_left -= 1
            self._carriers[key] = self.lookup(key)
        return not self._carriers[key]

    def _answers_free(self) -> bool:
        """Whether questions cost nothing more: IntakeQ's whole client list is read."""
        return isinstance(self.lookup, ClientBook) and self.lookup.requests_for(1) == 0

    def email_left_client(self, patient_id: uuid.UUID) -> bool:
        """Whether a patient whose ClientId is known may have appointments a query by their
        email cannot find: IntakeQ no longer lists their email on that client (asked once a
        run, out of the questions about known patients), or that could not be asked."""
        patient = self.by_id.get(patient_id)
        if patient is None or patient.client_id is None or self.lookup is None:
            return False
        key = patient.email.lower()
        if key not in self._carriers:
            if self.follow_lookups_left <= 0 and not self._answers_free():
                return True
            self.follow_lookups_left -= 1
            self._carriers[key] = self.lookup(key)
        return patient.client_id not in self._carriers[key]

    # -- inside the write transaction: pure --------------------------------------------------

    def owner_of(self, client_id: int | None, email: str | None) -> PatientIdentity | None:
        """Whose record this is, without learning anything (rules 1 and 2's email match)."""
        if client_id is not None and client_id in self.by_client_id:
            return self.by_client_id[client_id]
        patient = self.by_email.get(email.lower()) if email else None
        if patient is None or patient.id in self.shared:
            return None
        if patient.client_id not in (None, client_id):
            return None  # our email under another IntakeQ client: rule 3 decides
        return patient

    def resolve(
        self, client_id: int | None, email: str | None, stored_for: uuid.UUID | None = None
    ) -> PatientIdentity | None:
        """Whose record this is, applying rules 1-4; `stored_for` is the patient we store
        this appointment (same Id) for, if any. Learns and follows ClientIds."""
        if client_id is not None and client_id in self.by_client_id:
            known = self.by_client_id[client_id]
            if email and email.lower() == known.email.lower():
                self._email_on_known.add(known.id)
            return known
        patient = self.by_email.get(email.lower()) if email else None
        if patient is None or client_id is None:
            return patient if patient is not None and patient.id not in self.shared else None
        if patient.id in self.shared:
            return None
        if patient.id not in self.scope:
            # Another run's patient: judged, never learned for, here (their run asks).
            if patient.client_id is None or stored_for == patient.id:
                return patient
            return None
        if patient.client_id is None:
            carriers = self._carriers.get(patient.email.lower())
            if carriers is None and self.lookup is not None:
                self.unconfirmed.add(patient.id)
                return None  # not asked this run (budget spent): learn nothing yet
            if carriers is not None and len(carriers) > 1:
                self.shared[patient.id] = len(carriers)
                return None
            if carriers is not None and client_id not in carriers:
                return None  # IntakeQ's own answers disagree: learn nothing this run
            self._set(patient, client_id)
            return patient
        carriers = self._carriers.get(patient.email.lower())
        if stored_for == patient.id or carriers == {client_id}:
            # Rule 3: an appointment we store for the patient is now under this ClientId,
            # or it is the only client left with their email: the ClientId follows.
            self._set(patient, client_id)
            return patient
        self._passed_over.setdefault(patient.id, set()).add(client_id)
        if carriers is None and self.lookup is not None:
            # Not asked (the run's questions are spent): this may be the patient's new
            # profile as well as a family member's (settled in `unasked`).
            self._unasked.add(patient.id)
        elif carriers is not None and client_id in carriers:
            # Several clients carry the email: a family member's when the patient's own
            # ClientId is still one of them, else nobody can say whose (settled in `finish`).
            self._contested.setdefault(patient.id, set()).update(carriers)
        return None

    def unasked(self) -> set[uuid.UUID]:
        """Patients with a record under another ClientId carrying their email that nobody
        could ask IntakeQ about, unless their own ClientId was listed with their email this
        run (then it still carries it, and the other is someone else's, as asking would have
        said): their appointments may be missing."""
        return {
            pid for pid in self._unasked if pid not in self._email_on_known and pid in self.scope
        }

    def followed_late(self) -> set[uuid.UUID]:
        """Patients of the run whose ClientId followed a new one after records under that
        new one, carrying their email, had already been passed over this run (listed before
        the stored appointment that revealed the merge): those may be missing."""
        return {pid for pid in self._followed_late if pid in self.scope}

    def contested(self) -> dict[uuid.UUID, int]:
        """Patients of the run whose known ClientId no longer carries their email while
        several IntakeQ clients do (a merge or re-creation beside a family member), with no
        appointment we store to tell which is theirs: patient id -> how many clients. Like
        rule 2's shared email, neither is learned and the patient is flagged."""
        return {
            pid: len(carriers)
            for pid, carriers in self._contested.items()
            if self.by_id[pid].client_id not in carriers and pid not in self.shared
        }

    def refused_for(
        self, client_id: int | None, email: str | None, owner: PatientIdentity | None
    ) -> uuid.UUID | None:
        """The run's patient whose email this record carries although its ClientId is
        another patient's (one person, two of our patients): said once per run."""
        patient = self.by_email.get((email or "").lower())
        if (
            patient is None
            or owner is None
            or client_id is None
            or owner.id == patient.id
            or patient.client_id is not None
            or patient.id not in self.scope
            or (patient.id, client_id) in self.held_elsewhere
        ):
            return None
        self.held_elsewhere.add((patient.id, client_id))
        return patient.id

    def _set(self, patient: PatientIdentity, client_id: int) -> None:
        old = patient.client_id
        if old is not None and client_id in self._passed_over.get(patient.id, set()):
            self._followed_late.add(patient.id)
        if old is not None:
            self.by_client_id.pop(old, None)
        patient.client_id = client_id
        self.by_client_id[client_id] = patient
        self._changes.append(ClientIdChange(patient.id, old, client_id))

    def take_changes(self) -> list[ClientIdChange]:
        """ClientIds learned or followed since the last call, to store with the page."""
        changes, self._changes = self._changes, []
        return changes

    def undo(self, changes: Iterable[ClientIdChange]) -> None:
        """Forget changes whose transaction rolled back."""
        for change in reversed(list(changes)):
            patient = self.by_id[change.patient_id]
            self.by_client_id.pop(change.new, None)
            patient.client_id = change.old
            if change.old is not None:
                self.by_client_id[change.old] = patient

    def requests_reserved(self) -> int:
        """At most how many requests the questions this run may still ask can cost."""
        questions = max(0, self.lookups_left) + max(0, self.follow_lookups_left)
        if questions == 0 or self.lookup is None:
            return 0
        if isinstance(self.lookup, ClientBook):
            return self.lookup.requests_for(questions)
        return questions

    def in_scope(self, patient: PatientIdentity | None) -> bool:
        return patient is not None and patient.id in self.scope

    def email_of(self, patient_id: uuid.UUID) -> str:
        return self.by_id[patient_id].email


# Besides one question per patient whose ClientId is not known yet, a run may ask this many
# about records carrying a known patient's email under another ClientId (a re-created
# profile, a family member).
FOLLOW_LOOKUPS = 5


def lookup_budget(unlearned_patients: int) -> int:
    """The requests one run may spend on IntakeQ's client list: the whole list (at most one
    page per patient asked about) when it is short, else one search per patient, and the
    questions about known patients' emails under other ClientIds."""
    return 2 * unlearned_patients + FOLLOW_LOOKUPS


class ClientBook:
    """Answers "which ClientIds carry this email" for one run, as cheaply as it can: when
    several patients need asking, IntakeQ's whole client list once (at most `list_pages`
    pages of 100), else, or when the list is longer, one `search=` per email. At most
    `list_pages` + one search per question: `lookup_budget` counts both."""

    def __init__(
        self, clients: Callable[[str | None], Iterable[tuple[int, str | None]]], list_pages: int
    ) -> None:
        self._clients = clients
        self._list_pages = list_pages
        self._everyone: dict[str, set[int]] | None = None

    def __call__(self, email: str) -> set[int]:
        if self._everyone is None and self._list_pages >= 2:
            self._everyone = self._whole_list()
            self._list_pages = 0
        if self._everyone is not None:
            return set(self._everyone.get(email.lower(), set()))
        return exact_carriers(email, self._clients(email))

    def requests_for(self, questions: int) -> int:
        """At most how many requests `questions` more questions cost: none once the whole
        list is read, else the list's pages while it may still be read, and a search each."""
        if self._everyone is not None:
            return 0
        return (self._list_pages if self._list_pages >= 2 else 0) + questions

    def _whole_list(self) -> dict[str, set[int]] | None:
        """Every client by email, or None when the list is longer than `list_pages` pages
        (the pages read so far are the price of finding out)."""
        found: dict[str, set[int]] = {}
        listing = iter(self._clients(None))
        try:
            for count, (client_id, email) in enumerate(listing, start=1):
                found.setdefault((email or "").lower(), set()).add(client_id)
                if count >= self._list_pages * 100:
                    return None  # the last page allowed was full: there may be more
        finally:
            close = getattr(listing, "close", None)
            if close is not None:
                close()
        return found


def exact_carriers(email: str, found: Iterable[tuple[int, str | None]]) -> set[int]:
    """The ClientIds among `/clients` search results whose email is exactly `email`."""
    wanted = email.lower()
    return {client_id for client_id, their in found if (their or "").lower() == wanted}
