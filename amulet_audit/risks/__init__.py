"""Risks: one module per risk with its attacks and metrics, registered by name through entry points."""
