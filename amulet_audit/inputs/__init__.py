"""Audit inputs: the model under audit and the data it is audited on."""
