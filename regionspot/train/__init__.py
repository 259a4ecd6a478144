"""Training the fusion head: configuration, loss, schedule, loop, checkpoints."""
