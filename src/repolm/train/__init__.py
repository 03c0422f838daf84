"""The train stage: fine-tune a model on the built dataset, within a memory plan."""
