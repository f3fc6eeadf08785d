"""Training losses, one module per family, each built on the play side's networks and schedules."""
