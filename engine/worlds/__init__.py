"""World definitions (assets/worlds/*.yaml) and the sessions that run one tick."""
