"""Networks of every world family; state-dict keys and shapes equal the official checkpoints."""
