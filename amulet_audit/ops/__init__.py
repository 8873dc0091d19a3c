"""Operations on the model under audit: batched forward passes, the one conversion of its outputs to
log-probabilities, and the perturbation primitives shared by evasion attacks and adversarial training."""
