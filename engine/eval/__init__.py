"""Scores a world model (a dream) against real recordings: metrics, baselines, revisits, report."""
