"""The trainable fusion head, the whole model, and its checkpoints."""
