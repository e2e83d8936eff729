"""Training, evaluation and checkpointing loops."""
