"""Roles and what they may do."""

from __future__ import annotations

ROLES = ("staff_admin", "staff_viewer", "partner_admin", "case_manager", "viewer")
# The clinic's staff see everything; staff_viewer only reads (no syncs, no changes).
STAFF_ROLES = ("staff_admin", "staff_viewer")
PARTNER_ROLES = ("partner_admin", "case_manager", "viewer")
SYNC_ROLES = ("staff_admin", "partner_admin", "case_manager")
