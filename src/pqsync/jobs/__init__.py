"""Background work on a huey queue: sync runs, webhook re-fetches and the schedule."""
