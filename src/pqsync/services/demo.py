"""`pqsync demo`: the simulator, a demo directory that matches it, and a First Step House sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from intakeq_sim import SimulatorServer, demo_directory
from pqsync.bootstrap import build_app
from pqsync.db.migrate import upgrade
from pqsync.services.directory import import_directory_file
from pqsync.settings import load_settings

DEMO_ORG = "first-step-house"


def demo_instructions(
    directory: dict[str, Any], control_url: str, web_port: int, today: date
) -> list[str]:
    """What the person running the demo reads: where the dashboard is, who to sign in as,
    and how to book a follow-up in the simulator to watch it arrive after a sync."""
    users = {u["role"]: u for u in directory.get("partner_users", []) if u.get("password")}
    lines = [f"Dashboard: http://127.0.0.1:{web_port}/  (API docs: /docs)", "Demo logins:"]
    for role, label in (("case_manager", "case manager"), ("staff_admin", "staff admin")):
        if role in users:
            lines.append(f"  {label}: {users[role]['email']} / {users[role]['password']}")
    consenting = {
        a["patient"]
        for a in directory.get("affiliations", [])
        if (a.get("roi_consent") or {}).get("status") == "active"
    }
    patient = next(
        (
            p
            for p in directory.get("patients", [])
            if p.get("intakeq_client_id")
            and (p.get("email") in consenting or p.get("id") in consenting)
        ),
        None,
    )
    if patient is not None:
        day = (today + timedelta(days=1)).isoformat()
        body = json.dumps(
            {"ClientId": patient["intakeq_client_id"], "StartDateLocal": f"{day}T10:30:00"}
        )
        lines += [
            "Watch a follow-up arrive: book one in the simulator as the provider would,",
            f"  curl -X POST {control_url}/appointments "
            f"-H 'Content-Type: application/json' -d '{body}'",
            f"then watch {patient['first_name']} {patient['last_name']}'s row on the open "
            "dashboard: the simulator sends IntakeQ's webhook, and within a few seconds the "
            "next appointment becomes tomorrow at 10:30 AM by itself (no reload; the "
            'history says "PracticeQ (webhook)"). "Sync from PracticeQ" fetches it too.',
        ]
    lines.append("Press Ctrl-C to stop.")
    return lines


def run_demo(*, port: int, web_port: int, once: bool, out: Console, err: Console) -> None:
    """Start the simulator, set up the database, import the demo directory and sync."""
    with SimulatorServer(port=port, seed=1) as simulator:
        out.print(f"IntakeQ simulator listening at {simulator.base_url}", highlight=False)
        # A booking shows on the open dashboard within seconds: webhooks wait 2 s for more
        # of a burst, not the production 30 s (unless the environment says otherwise).
        coalesce = os.environ.get("PQSYNC_WEBHOOK_COALESCE_SECONDS", "2")
        settings = load_settings(
            INTAKEQ_BASE_URL=simulator.base_url, PQSYNC_WEBHOOK_COALESCE_SECONDS=coalesce
        )
        app = build_app(settings)
        try:
            upgrade(app.engine)
            directory_path = Path("var/demo-directory.json")
            directory_path.parent.mkdir(parents=True, exist_ok=True)
            directory = demo_directory(simulator.dataset)
            directory_path.write_text(json.dumps(directory, indent=2), encoding="utf-8")
            counts = import_directory_file(app.engine, directory_path)
            out.print(
                f"directory {directory_path} imported: {sum(counts.created.values())} created, "
                f"{sum(counts.unchanged.values()) + sum(counts.updated.values())} already there",
                highlight=False,
            )
            service = app.sync_service()
            columns = (
                SpinnerColumn(),
                TextColumn("syncing First Step House from IntakeQ"),
                TextColumn("{task.completed} page(s)"),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=err) as bar:
                task = bar.add_task("sync", total=None)
                result = service.sync_organization(
                    DEMO_ORG,
                    progress=lambda label, done, _total: (
                        bar.update(task, completed=done) if label == "pages" else None
                    ),
                )
            s = result.summary
            out.print(
                f"First Step House ({len(result.patients)} patients, {result.window.start} to "
                f"{result.window.end}): new {s.new}, updated {s.updated}, "
                f"unchanged {s.unchanged}, errors {s.errors} "
                f"({result.requests_made} IntakeQ requests, status {result.status})",
                highlight=False,
            )
            for practitioner, count in sorted(result.unmatched_practitioners.items()):
                out.print(
                    f"warning: {count} appointment(s) of unmapped practitioner {practitioner}",
                    highlight=False,
                )
            out.print(f"database: {settings.database_url}", highlight=False)
            if once:
                return
            today = app.clock().astimezone(simulator.dataset.zone).date()
            for line in demo_instructions(directory, simulator.control_url, web_port, today):
                out.print(line, highlight=False, soft_wrap=True)
            from pqsync.cli_web import serve
            from pqsync.logging import configure_logging

            configure_logging(level="INFO")
            # The queue's worker beside the web server: 202 syncs, webhooks, the schedule.
            env = {
                **os.environ,
                "INTAKEQ_BASE_URL": simulator.base_url,
                "PQSYNC_WEBHOOK_COALESCE_SECONDS": coalesce,
            }
            token = settings.webhook_token.get_secret_value()
            simulator.configure_webhooks(
                url=f"http://127.0.0.1:{web_port}/api/webhooks/practiceq/appointments?token={token}"
            )
            worker = subprocess.Popen([sys.executable, "-m", "pqsync.cli", "worker"], env=env)
            try:
                serve(host="127.0.0.1", port=web_port, app=app)
            finally:
                worker.terminate()
                worker.wait(timeout=30)
        finally:
            app.close()
