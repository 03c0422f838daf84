"""repolm's formats, below every stage that writes or reads them: the special tokens (the
vocabulary contract between tokenizer, dataset and model) and the documents built from them."""
