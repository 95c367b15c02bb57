"""Change in IntakeQ to visible through our API: webhooks against the nightly-only baseline.

A provider edits an appointment in the simulator (which sends IntakeQ's webhook to a real
`pqsync serve`); a real `pqsync worker` re-fetches it; we time until
`GET /api/partner-dashboard/patients/{id}/appointments` shows the change. One change at a
time, 200 by default, at IntakeQ's real request limits (10 a minute, 500 a day) on both
sides. The minute can be compressed (`--minute-seconds`, default 6: ten requests per 6 s):
latency is dominated by the coalescing wait and the re-fetch, not by the minute's length,
as long as the rate of changes stays under the limit.

Baseline in the same run: nightly-only, the change waits for the next 03:00 run; computed
for the same number of changes spread evenly over a day.

    .venv/bin/python bench/webhook_latency.py [--changes 200] [--coalesce 1] [--share 0.5]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from common import free_port

from intakeq_sim import AppointmentChanges, SimConfig, SimulatorServer

TOKEN = "bench-webhook-token-0123456789abcdef"
PQSYNC = [sys.executable, "-m", "pqsync.cli"]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def nightly_baseline(changes: int) -> list[float]:
    """Seconds from a change to the next 03:00 run, for changes spread over a day."""
    day = datetime(2026, 1, 5, tzinfo=UTC)
    out = []
    for n in range(changes):
        at = day + timedelta(seconds=86_400 * n / changes)
        nightly = at.replace(hour=3, minute=0, second=0)
        if nightly <= at:
            nightly += timedelta(days=1)
        out.append((nightly - at).total_seconds())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--minute-seconds", type=float, default=6.0)
    parser.add_argument("--coalesce", type=float, default=1.0)
    parser.add_argument("--share", type=float, default=0.5)
    args = parser.parse_args()

    config = SimConfig(minute_limit=10, daily_limit=500, minute_window_seconds=args.minute_seconds)
    folder = Path(tempfile.mkdtemp(prefix="pqsync-bench-webhooks-"))
    with SimulatorServer(port=0, config=config) as sim:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))},
            "PQSYNC_DATABASE_URL": f"sqlite:///{folder}/pqsync.db",
            "PQSYNC_QUEUE_URL": f"sqlite:///{folder}/queue.db",
            "INTAKEQ_BASE_URL": sim.base_url,
            "INTAKEQ_MINUTE_LIMIT": "10",
            "INTAKEQ_DAILY_LIMIT": "500",
            "INTAKEQ_MINUTE_WINDOW_SECONDS": str(args.minute_seconds),
            "PQSYNC_WEBHOOK_TOKEN": TOKEN,
            "PQSYNC_WEBHOOK_COALESCE_SECONDS": str(args.coalesce),
            "PQSYNC_WEBHOOK_BUDGET_SHARE": str(args.share),
        }

        def cli(*words: str) -> str:
            done = subprocess.run(
                [*PQSYNC, *words], env=env, cwd=folder, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(f"pqsync {' '.join(words)}: {done.stderr.strip()}")
            return done.stdout.strip()

        cli("db", "upgrade")
        directory = folder / "directory.json"
        directory.write_text(httpx.get(f"{sim.control_url}/directory").text)
        cli("directory", "import", str(directory))
        cli("sync", "org", "first-step-house")
        bearer = {"Authorization": f"Bearer {cli('users', 'token', 'ops@clinic.example')}"}
        processes = [
            subprocess.Popen([*PQSYNC, *words], env=env, cwd=folder, stderr=subprocess.DEVNULL)
            for words in (["serve", "--port", str(port)], ["worker", "--workers", "2"])
        ]
        try:
            api = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    httpx.get(f"{api}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            sim.configure_webhooks(url=f"{api}/api/webhooks/practiceq/appointments?token={TOKEN}")
            latencies, unseen = measure(sim, api, bearer, args.changes)
        finally:
            for process in processes:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=30)

    baseline = nightly_baseline(args.changes)
    print(
        f"{args.changes} changes, one at a time; limits 10 requests per "
        f"{args.minute_seconds:g} s and 500 a day; webhook share {args.share:g}; "
        f"coalescing {args.coalesce:g} s"
    )
    print(f"{'':38}{'p50':>12}{'p95':>12}{'max':>12}")
    if latencies:
        print(
            f"{'webhooks (pqsync)':38}{statistics.median(latencies):>11.2f}s"
            f"{percentile(latencies, 0.95):>11.2f}s{max(latencies):>11.2f}s"
        )
    print(
        f"{'baseline: nightly only':38}{statistics.median(baseline) / 3600:>11.1f}h"
        f"{percentile(baseline, 0.95) / 3600:>11.1f}h{max(baseline) / 3600:>11.1f}h"
    )
    print(f"not visible within 60 s (left for the nightly run): {unseen}")


def measure(
    sim: SimulatorServer, api: str, bearer: dict[str, str], changes: int
) -> tuple[list[float], int]:
    """Move one of our patients' appointments by a day at a time; time until our API shows
    the new start."""
    patients = httpx.get(f"{api}/api/partner-dashboard/patients", headers=bearer).json()
    with_details = []
    for p in patients["patients"]:
        shown = httpx.get(
            f"{api}/api/partner-dashboard/patients/{p['id']}/appointments", headers=bearer
        )
        if shown.status_code == 200 and shown.json()["appointments"]:
            with_details.append((p["id"], shown.json()["appointments"]))
    rng = random.Random(7)
    latencies: list[float] = []
    unseen = 0
    today = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0)
    for n in range(changes):
        patient_id, rows = rng.choice(with_details)
        ident = rng.choice(rows)["pqAppointmentId"]
        start = today + timedelta(days=rng.randint(-40, 40), minutes=15 * (n % 4))
        try:
            moved = sim.app.store.update(ident, AppointmentChanges(start=start))
        except Exception:  # deleted meanwhile: not ours to time
            continue
        began = time.monotonic()
        wanted = moved["StartDate"]
        deadline = began + 60
        while time.monotonic() < deadline:
            shown = httpx.get(
                f"{api}/api/partner-dashboard/patients/{patient_id}/appointments",
                headers=bearer,
            ).json()["appointments"]
            row = next((r for r in shown if r["pqAppointmentId"] == ident), None)
            if row is not None and _ms(row["startTime"]) == wanted:
                latencies.append(time.monotonic() - began)
                break
            time.sleep(0.05)
        else:
            unseen += 1
    return latencies, unseen


def _ms(local_iso: str) -> int:
    return int(datetime.fromisoformat(local_iso).timestamp() * 1000)


if __name__ == "__main__":
    main()
