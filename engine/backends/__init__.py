"""Where and how networks run: device and precision selection, eager and compiled backends."""
