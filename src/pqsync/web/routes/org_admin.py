"""A partner admin's page of their organisation (users, consents) and the invitation link
with which an invited person sets their password."""

from __future__ import annotations

import smtplib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from pqsync.domain.roles import PARTNER_ROLES
from pqsync.logging import get_logger
from pqsync.services import org_admin
from pqsync.services.alerts import SmtpError, SmtpMailer
from pqsync.services.auth import Principal
from pqsync.services.organizations import organization_by_id
from pqsync.services.users import UserInputError
from pqsync.web.context import WebContext
from pqsync.web.deps import ContextDep, SessionDep
from pqsync.web.page_support import (
    NO_TOKEN,
    CsrfField,
    PageForbidden,
    PageNotFound,
    PageRoute,
    PageUser,
    check_form_token,
    render,
)
from pqsync.web.render import PAGE_HEADERS

router = APIRouter(route_class=PageRoute, include_in_schema=False)
log = get_logger("pqsync.web.org_admin")


def partner_admin(user: PageUser) -> Principal:
    if not org_admin.may_manage(user):
        raise PageForbidden()
    return user


AdminUser = Annotated[Principal, Depends(partner_admin)]


def organization_page(
    request: Request,
    ctx: WebContext,
    session: Session,
    user: Principal,
    *,
    notice: str | None = None,
    error: str | None = None,
    invite_link: str | None = None,
    status: int = 200,
    form: dict[str, Any] | None = None,
) -> HTMLResponse:
    org = organization_by_id(session, user.organization_id)
    if org is None:
        raise PageNotFound()
    return render(
        ctx,
        request,
        "organization.html",
        user,
        org=org,
        members=org_admin.members(session, user),
        consents=org_admin.consents(session, org, ctx.now()),
        roles=PARTNER_ROLES,
        notice=notice,
        error=error,
        invite_link=invite_link,
        form=form or {},
        status_code=status,
    )


@router.get("/organization")
def organization(
    request: Request, ctx: ContextDep, session: SessionDep, user: AdminUser
) -> HTMLResponse:
    return organization_page(request, ctx, session, user)


@router.post("/organization/invite")
def invite(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    user: AdminUser,
    csrf_token: CsrfField = NO_TOKEN,
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form(max_length=32)] = "",
) -> HTMLResponse:
    check_form_token(user, csrf_token)
    try:
        token = org_admin.invite(session, user, email=email, name=name, role=role, now=ctx.now())
    except UserInputError as exc:
        form = {"email": email, "name": name, "role": role}
        return organization_page(request, ctx, session, user, error=str(exc), status=422, form=form)
    link = ctx.app.settings.base_url.rstrip("/") + f"/invite/{token}"
    address = email.strip().lower()
    mailed = mail_invitation(ctx, address, user, link)
    how = (
        "We mailed them this link"
        if mailed
        else "Send them this link (no mail was sent: mail is not set up or failed)"
    )
    return organization_page(
        request,
        ctx,
        session,
        user,
        notice=f"Invited {address}. {how}; it is shown only now and works once, for "
        f"{org_admin.INVITATION_DAYS} days, to set their password:",
        invite_link=link,
    )


def mail_invitation(ctx: WebContext, address: str, inviter: Principal, link: str) -> bool:
    """Mail the link when PQSYNC_SMTP_URL is set; whether it went."""
    url = ctx.app.settings.smtp_url
    if not url:
        return False
    subject = f"{inviter.name} invited you to {inviter.organization_name or 'pqsync'}'s dashboard"
    body = (
        f"{inviter.name} invited you to see appointments on the pqsync dashboard.\n\n"
        f"Set your password here (the link works once, for {org_admin.INVITATION_DAYS} days):\n"
        f"{link}\n"
    )
    try:
        SmtpMailer.from_url(url).send([address], subject, body)
    except (OSError, smtplib.SMTPException, SmtpError) as exc:
        log.error("invitation.mail_failed", error=type(exc).__name__)
        return False
    return True


@router.post("/organization/users/{user_id}")
def change_user(
    user_id: str,
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    user: AdminUser,
    csrf_token: CsrfField = NO_TOKEN,
    action: Annotated[str, Form(max_length=16)] = "",
    role: Annotated[str, Form(max_length=32)] = "",
) -> HTMLResponse:
    check_form_token(user, csrf_token)
    try:
        if action == "role":
            changed = org_admin.change_role(session, user, user_id, role)
            notice = f"{changed.name} is now {role.replace('_', ' ')}."
        elif action == "deactivate":
            changed = org_admin.deactivate(session, user, user_id, ctx.now())
            notice = (
                f"{changed.name} is deactivated: signed out everywhere, and their calendar "
                "address no longer answers."
            )
        else:
            raise PageNotFound()
    except org_admin.NotYours:
        raise PageNotFound() from None
    except UserInputError as exc:
        session.rollback()
        return organization_page(request, ctx, session, user, error=str(exc), status=422)
    return organization_page(request, ctx, session, user, notice=notice)


# -- accepting an invitation (no session: the link is the secret) ----------------------------


@router.get("/invite/{token}")
def invitation(token: str, request: Request, ctx: ContextDep, session: SessionDep) -> Response:
    try:
        _invitation, invited = org_admin.open_invitation(session, token, ctx.now())
    except org_admin.InvitationUnusable:
        raise PageNotFound() from None
    return render(ctx, request, "invitation.html", None, invited=invited, token=token, error=None)


@router.post("/invite/{token}")
def accept_invitation(
    token: str,
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        org_admin.accept_invitation(session, token, password, ctx.now())
    except org_admin.InvitationUnusable:
        raise PageNotFound() from None
    except UserInputError as exc:
        session.rollback()
        _invitation, invited = org_admin.open_invitation(session, token, ctx.now())
        return render(
            ctx,
            request,
            "invitation.html",
            None,
            invited=invited,
            token=token,
            error=str(exc),
            status_code=422,
        )
    return RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)
