"""pqsync: keeps a clinic's database in step with IntakeQ appointments."""

__version__ = "0.1.0"
