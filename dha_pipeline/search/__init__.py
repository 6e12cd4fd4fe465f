"""The one training loop (manual mode now; the joint DHA search plugs in here) and its checkpoints."""
