"""A partner admin manages their own organisation: invite (the invited person sets a password
by the link and signs in), change a role, deactivate (signed out at once, API token and
calendar address dead), and the consent list with expiry dates."""

from __future__ import annotations

import re
from collections.abc import Callable

from casework_support import text_of
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_alert_mail import Inbox, inbox
from test_alert_mail import text_of as mail_text
from test_dashboard_pages import sign_in
from web_support import PASSWORD, USERS, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import PartnerUser

__all__ = ["inbox"]  # the fixture, shared with the alert mail tests


def member_id(page: str, email: str) -> str:
    row = re.search(rf'<tr data-member="{re.escape(email)}">.*?</tr>', page, re.DOTALL)
    assert row is not None, email
    found = re.search(r'action="/organization/users/([0-9a-f-]{36})"', row.group(0))
    assert found is not None
    return found.group(1)


def test_only_partner_admins_open_the_organisation_page(client: TestClient, seed: Seed) -> None:
    for who in ("case_manager", "viewer", "staff_admin"):
        client.cookies.clear()
        sign_in(client, who)
        assert client.get("/organization").status_code == 403
    client.cookies.clear()
    sign_in(client, "partner_admin")
    page = client.get("/organization")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "Jordan Ames" in words and "Hank Harbor" not in words  # own organisation only
    consents = words.split("ROI consents")[-1]
    assert f"{seed.names[seed.expired]} Expired 2025-10-16" in consents
    assert f"{seed.names[seed.consenting]} Active 2026-11-15 (in 365 days)" in consents
    assert f"{seed.names[seed.missing]} None on file —" in consents
    assert seed.names[seed.other_patient] not in consents


def test_an_invited_person_sets_a_password_by_the_link_and_signs_in(
    client: TestClient, pq_app: App
) -> None:
    csrf = sign_in(client, "partner_admin")
    invited = client.post(
        "/organization/invite",
        data={"csrf_token": csrf, "email": "Sam@FirstStepHouse.org", "name": "Sam Case",
              "role": "case_manager"},
    )  # fmt: skip
    assert invited.status_code == 200
    link = re.search(r'value="[^"]*(/invite/[^"]+)"', invited.text)
    assert link is not None
    assert "Invited (no password yet)" in text_of(invited.text)
    again = client.post(
        "/organization/invite",
        data={"csrf_token": csrf, "email": "sam@firststephouse.org", "name": "Sam",
              "role": "case_manager"},
    )  # fmt: skip
    assert again.status_code == 422 and "already has an account" in again.text
    staff = client.post(
        "/organization/invite",
        data={"csrf_token": csrf, "email": "x@firststephouse.org", "name": "X",
              "role": "staff_admin"},
    )  # fmt: skip
    assert staff.status_code == 422  # a partner admin gives partner roles only

    with open_client(pq_app) as newcomer:
        assert newcomer.get(link.group(1)).status_code == 200
        short = newcomer.post(link.group(1), data={"password": "short"})
        assert short.status_code == 422 and "at least 12 characters" in short.text
        done = newcomer.post(
            link.group(1), data={"password": "a long enough passphrase"}, follow_redirects=False
        )
        assert done.status_code == 303
        assert newcomer.get(link.group(1)).status_code == 404  # used: once only
        signed = newcomer.post(
            "/api/auth/login",
            json={"email": "sam@firststephouse.org", "password": "a long enough passphrase"},
        )
        assert signed.status_code == 200
        assert signed.json()["user"]["role"] == "case_manager"


def test_changing_a_role_and_deactivating_take_effect_at_once(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    with open_client(pq_app) as jordan:
        jordan_csrf = sign_in(jordan, "case_manager")
        feed = jordan.post("/calendar", data={"csrf_token": jordan_csrf})
        address = re.search(r'value="[^"]*(/calendar/[^"]+)"', feed.text)
        assert address is not None
        csrf = sign_in(client, "partner_admin")
        page = client.get("/organization").text
        jordan_id = member_id(page, USERS["case_manager"])
        made_viewer = client.post(
            f"/organization/users/{jordan_id}",
            data={"csrf_token": csrf, "action": "role", "role": "viewer"},
        )
        assert "Jordan Ames is now viewer." in made_viewer.text
        # Jordan's open session now has a viewer's rights: no syncing.
        sync = f"/api/partner-dashboard/patients/{seed.consenting}/sync"
        assert jordan.post(sync, headers={"X-CSRF-Token": jordan_csrf}).status_code == 403
        assert jordan.get(address.group(1)).status_code == 200

        gone = client.post(
            f"/organization/users/{jordan_id}", data={"csrf_token": csrf, "action": "deactivate"}
        )
        assert "Jordan Ames is deactivated" in gone.text
        assert jordan.get("/", follow_redirects=False).status_code == 303  # to sign-in
        assert jordan.get(address.group(1)).status_code == 404
        token_call = client.get("/api/auth/me", headers=seed.bearer("case_manager"))
        assert token_call.status_code == 401
        again = jordan.post(
            "/api/auth/login", json={"email": USERS["case_manager"], "password": PASSWORD}
        )
        assert again.status_code == 401


def test_an_admin_cannot_change_themselves_or_another_organisation_s_users(
    client: TestClient, pq_app: App
) -> None:
    with Session(pq_app.engine) as session:
        ids = {
            email: str(session.scalars(select(PartnerUser.id).filter_by(email=email)).one())
            for email in (USERS["other_org_admin"], USERS["partner_admin"])
        }
    csrf = sign_in(client, "partner_admin")
    page = client.get("/organization").text
    assert f'action="/organization/users/{ids[USERS["partner_admin"]]}"' not in page
    own = client.post(
        f"/organization/users/{ids[USERS['partner_admin']]}",
        data={"csrf_token": csrf, "action": "role", "role": "viewer"},
    )
    assert own.status_code == 422 and "You cannot change your own account here." in own.text
    foreign = client.post(
        f"/organization/users/{ids[USERS['other_org_admin']]}",
        data={"csrf_token": csrf, "action": "deactivate"},
    )
    assert foreign.status_code == 404
    forged = client.post(
        f"/organization/users/{ids[USERS['other_org_admin']]}",
        data={"csrf_token": "forged", "action": "deactivate"},
    )
    assert forged.status_code == 403
    with open_client(pq_app) as hank:
        assert (
            hank.post(
                "/api/auth/login", json={"email": USERS["other_org_admin"], "password": PASSWORD}
            ).status_code
            == 200
        )


def test_the_invitation_is_mailed_when_mail_is_set_up(
    build_app: Callable[..., App], inbox: tuple[Inbox, int]
) -> None:
    mail, port = inbox
    app = build_app(
        PQSYNC_SMTP_URL=f"smtp://127.0.0.1:{port}", PQSYNC_BASE_URL="https://pqsync.example.org"
    )
    with open_client(app) as client:
        csrf = sign_in(client, "partner_admin")
        page = client.post(
            "/organization/invite",
            data={"csrf_token": csrf, "email": "sam@firststephouse.org", "name": "Sam Case",
                  "role": "viewer"},
        )  # fmt: skip
    assert "We mailed them this link" in page.text
    link = re.search(r'value="(https://pqsync\.example\.org/invite/inv_[^"]+)"', page.text)
    assert link is not None
    assert [m["To"] for m in mail.messages] == ["sam@firststephouse.org"]
    assert link.group(1) in mail_text(mail.messages[0])
