"""Export: deployable model files with embedded metadata, behind a numeric parity gate."""
