"""The player: window and event loop, renderer, input mapping, HUD, recorder, replay and headless runs."""
