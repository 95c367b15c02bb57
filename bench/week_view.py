"""Benchmark 7: the week view (`/week`, this week's appointments of every consenting
resident, by day) of an organisation with 1,000 residents and 20,000 appointments (about 780
this week), next to the roster's first page (`/`), each under 20 concurrent clients on
loopback against `pqsync serve --workers N`. Same data, server and load as bench/roster.py.

    .venv/bin/python bench/week_view.py [--backends sqlite,postgresql] [--workers 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
from common import fresh_database, row
from roster import CLIENTS, figures, hammer, seed, server, session_cookie


def run(backend: str, workers: int, seconds: float) -> None:
    with fresh_database(backend) as url:
        org_id = seed(url)
        with server(url, workers) as root:
            cookies = session_cookie(root)
            roster_path, week_path = f"/?org={org_id}", f"/week?org={org_id}"
            week = httpx.get(f"{root}{week_path}", cookies=cookies, timeout=60)
            assert week.status_code == 200
            shown = week.text.count("data-week-entry=")
            for path in (roster_path, week_path):
                asyncio.run(hammer(root, path, cookies, CLIENTS, 2))  # warm every worker
            roster = asyncio.run(hammer(root, roster_path, cookies, CLIENTS, seconds))
            weekly = asyncio.run(hammer(root, week_path, cookies, CLIENTS, seconds))
    print(f"\n{backend}, {workers} worker(s), {CLIENTS} clients, {seconds:.0f} s each")
    print(row("", "p50", "p95", "rate"))
    print(figures("roster, first page (baseline)", roster, seconds))
    print(figures(f"week view ({shown} appointments)", weekly, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        run(backend, args.workers, args.seconds)


if __name__ == "__main__":
    main()
