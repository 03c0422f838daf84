"""The language model at inference, below the stages that use it (eval, and serving next):
load a trained model, encode prompts in repolm's formats, score, generate."""
