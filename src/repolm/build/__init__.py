"""The build stage: packed training sequences, instruction pairs and evaluation sets."""
