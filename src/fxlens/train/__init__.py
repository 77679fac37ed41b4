"""Training: one module per objective. Each writes a checkpoint folder with config and model card."""
