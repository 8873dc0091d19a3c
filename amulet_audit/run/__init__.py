"""Running a plan: attacks on the audited model, verdicts, and the AuditResult."""

from amulet_audit.run.runner import run_audit

__all__ = ["run_audit"]
