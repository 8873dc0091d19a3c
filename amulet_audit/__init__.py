"""amulet-audit: audit trained PyTorch models for security, privacy and fairness risks."""

__version__ = "0.1.0"
__all__ = ["__version__"]
