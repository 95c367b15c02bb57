"""The HTTP API (FastAPI): partner dashboard JSON, cron and webhook receivers, operations."""
