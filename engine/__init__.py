"""Neural game engine: world models, samplers, memory, checkpoints and the tick session."""
