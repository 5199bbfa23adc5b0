"""Training: the GRPO loss and updater."""
