"""`python -m intakeq_sim`: run the simulator in the foreground."""

from __future__ import annotations

import argparse
import os

from intakeq_sim.config import DEFAULT_API_KEY
from intakeq_sim.server import serve


def _limit(raw: str) -> int | None:
    value = int(raw)
    return value or None


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m intakeq_sim")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--appointments", type=int, default=None)
    parser.add_argument("--minute-limit", type=_limit, default=10, help="0 = no limit")
    parser.add_argument("--daily-limit", type=_limit, default=500, help="0 = no limit")
    args = parser.parse_args(argv)
    serve(
        port=args.port,
        seed=args.seed,
        latency_ms=args.latency_ms,
        fail_rate=args.fail_rate,
        # The key comes from the environment only, never the command line (shell history).
        api_key=os.environ.get("INTAKEQ_SIMULATOR_KEY") or DEFAULT_API_KEY,
        patients=args.patients,
        appointments=args.appointments,
        minute_limit=args.minute_limit,
        daily_limit=args.daily_limit,
        host=args.host,
    )


if __name__ == "__main__":
    main()
