"""The tokenize stage: a tokenizer trained on the training split only (or a base model's, with
repolm's special tokens added), saved where plain `transformers` can load it."""
