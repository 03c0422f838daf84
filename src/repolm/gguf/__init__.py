"""GGUF, llama.cpp's single-file model format, in and out: `load` dequantizes a GGUF into a
cached Hugging Face directory once (so a GGUF serves as a base like any other), `write` writes
a Llama-family Hugging Face model as a GGUF that llama.cpp, Ollama and transformers read.

The third-party `gguf` library (llama.cpp's own) does the file format; transformers reads the
weights and the tokenizer back.
"""
