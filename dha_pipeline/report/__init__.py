"""Reports: PNG plots and the model card."""
