"""Use cases: sync, directory import, and friends."""
