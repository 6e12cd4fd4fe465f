"""Augmentation: the fixed base augmentation and the learned per-sample policy (14 ops over Kornia)."""
