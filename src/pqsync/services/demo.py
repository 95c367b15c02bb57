"""`pqsync demo`: the simulator, a demo directory that matches it, and a First Step House sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pqsync.bootstrap import build_app
from pqsync.db.migrate import upgrade
from pqsync.intakeq.simulator import SimulatorServer, demo_directory
from pqsync.services.directory import import_directory_file
from pqsync.settings import load_settings

DEMO_ORG = "first-step-house"


def run_demo(*, port: int, web_port: int, once: bool, out: Console, err: Console) -> None:
    """Start the simulator, set up the database, import the demo directory and sync."""
    with SimulatorServer(port=port, seed=1) as simulator:
        out.print(f"IntakeQ simulator listening at {simulator.base_url}", highlight=False)
        settings = load_settings(INTAKEQ_BASE_URL=simulator.base_url)
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
                    progress=lambda _label, done, _total: bar.update(task, completed=done),
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
            logins = [u for u in directory.get("partner_users", []) if u.get("password")]
            for user in logins:
                out.print(
                    f"login: {user['email']} / {user['password']} ({user['role']})",
                    highlight=False,
                )
            out.print(f"database: {settings.database_url}", highlight=False)
            if once:
                return
            out.print(
                f"Serving the API at http://127.0.0.1:{web_port} (docs: /docs); log in with "
                "POST /api/auth/login as one of the users above. Sync again from another "
                f"shell with\n  INTAKEQ_BASE_URL={simulator.base_url} "
                f".venv/bin/pqsync sync org {DEMO_ORG}\nPress Ctrl-C to stop.",
                highlight=False,
            )
            from pqsync.cli_web import serve
            from pqsync.logging import configure_logging

            configure_logging(level="INFO")
            # The queue's worker beside the web server: 202 syncs, webhooks, the schedule.
            env = {**os.environ, "INTAKEQ_BASE_URL": simulator.base_url}
            worker = subprocess.Popen([sys.executable, "-m", "pqsync.cli", "worker"], env=env)
            try:
                serve(host="127.0.0.1", port=web_port, app=app)
            finally:
                worker.terminate()
                worker.wait(timeout=30)
        finally:
            app.close()
