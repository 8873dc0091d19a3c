"""Defenses: each re-trains (or wraps) a copy of the audited model; the audited model is never modified."""
