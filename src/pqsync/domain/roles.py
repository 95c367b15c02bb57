"""Roles and what they may do (DESIGN.md's role table)."""

from __future__ import annotations

ROLES = ("staff_admin", "partner_admin", "case_manager", "viewer")
PARTNER_ROLES = ("partner_admin", "case_manager", "viewer")
SYNC_ROLES = ("staff_admin", "partner_admin", "case_manager")
