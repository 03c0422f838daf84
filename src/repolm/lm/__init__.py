"""The language model at inference, a shared layer below the stages that run a model (eval,
training's samples; serving next): one way to load a model, encode repolm's formats, score
and generate, so every caller agrees on device, precision, context and special tokens.

- `loading`: `LoadedModel`, `load_model` (a saved model, precision chosen for the device),
  `wrap` (a model in memory);
- `encoding`: repolm's documents and prompts as token ids (special tokens as ids or text);
- `scoring`: `sequence_nll`, `continuation_nll`, `text_nll`, `bits_per_byte`;
- `generation`: `generate` (greedy or nucleus sampling, stop ids and stop rules),
  `special_stops` (stop at repolm's special tokens).

The names above are importable from `repolm.lm` itself. torch and transformers are imported
only when a model is loaded or run. This layer imports only the base and shared layers
(`repolm.formats`, `repolm.hardware`, `repolm.hub`, `repolm.errors`), never a stage.
"""

from repolm.lm.generation import StopRule, generate, special_stops
from repolm.lm.loading import LoadedModel, load_model, wrap
from repolm.lm.scoring import bits_per_byte, continuation_nll, sequence_nll, text_nll

__all__ = [
    "LoadedModel",
    "StopRule",
    "bits_per_byte",
    "continuation_nll",
    "generate",
    "load_model",
    "sequence_nll",
    "special_stops",
    "text_nll",
    "wrap",
]
