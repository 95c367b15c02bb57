"""The only code that talks to IntakeQ (and its simulator)."""
