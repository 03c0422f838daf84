"""`repolm export`: a trained model of a run packed for other tools, under `OUT/export/<name>/`:
a Hugging Face directory with any LoRA adapter merged in (`merged/`), or a GGUF file with an
Ollama `Modelfile` next to it. A command on a run's outputs, not a pipeline stage.
"""
