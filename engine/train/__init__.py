"""Training: datasets and the latent cache (`data`), losses, the trainer and its configs."""
