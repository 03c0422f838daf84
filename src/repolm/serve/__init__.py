"""Using a trained model: `repolm complete` (`complete.py`: completion at a cursor or of a
prompt, streamed to the terminal), with the OpenAI-compatible server to follow. Serving reads a
run's outputs (its models, its config) and is a command, not a stage.
"""
