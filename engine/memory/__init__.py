"""Pose math (camera matrices, Plücker rays) and FOV-overlap memory retrieval."""
