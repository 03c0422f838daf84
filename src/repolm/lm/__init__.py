"""The language model at inference, a shared layer below the stages that run a model (eval,
training's samples, serving): one way to load a model, encode repolm's formats, score
and generate, so every caller agrees on device, precision, context and special tokens.

- `loading`: `LoadedModel`, `load_model` (a saved model, precision chosen for the device),
  `wrap` (a model in memory);
- `encoding`: repolm's documents and prompts as token ids (special tokens as ids or text);
- `scoring`: `sequence_nll`, `continuation_nll`, `text_nll`, `bits_per_byte`;
- `generation`: `generate` (batches; greedy or nucleus sampling, stop ids and stop rules),
  `special_stops` (stop at repolm's special tokens);
- `prompts`: `cursor_prompt` (completion at a cursor in a file, FIM or plain, fitted to the
  window).

The names above are importable from `repolm.lm` itself. torch and transformers are imported
only when a model is loaded or run. This layer imports only the base and shared layers
(`repolm.formats`, `repolm.hardware`, `repolm.hub`, `repolm.errors`), never a stage.
"""

from repolm.lm.generation import StopRule, generate, special_stops
from repolm.lm.loading import LoadedModel, load_model, wrap
from repolm.lm.prompts import cursor_prompt
from repolm.lm.scoring import bits_per_byte, continuation_nll, sequence_nll, text_nll

__all__ = [
    "LoadedModel",
    "StopRule",
    "bits_per_byte",
    "continuation_nll",
    "cursor_prompt",
    "generate",
    "load_model",
    "sequence_nll",
    "special_stops",
    "text_nll",
    "wrap",
]
