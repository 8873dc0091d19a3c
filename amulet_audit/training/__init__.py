"""Trained copies of the audited architecture: one training loop, per-convention losses, the stacked (K-model)
reference trainer and the content-addressed model cache."""
