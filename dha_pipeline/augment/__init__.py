"""Augmentation: the fixed base augmentation (and, later, the learned policy)."""
