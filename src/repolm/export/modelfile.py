"""An Ollama `Modelfile` for an exported GGUF: `FROM` the file, a `TEMPLATE` (fill-in-the-middle
with `{{ .Suffix }}` where the model has repolm's FIM tokens and learned them, ChatML messages
where the chat template is ChatML, the bare prompt otherwise), `PARAMETER num_ctx` and the stop
tokens.

Ollama's templates are Go templates, so a Jinja chat template is not copied: ChatML, the one
SmolLM2 and Qwen use, is written out; other chat templates stay in the GGUF's metadata only.
"""

from __future__ import annotations

from collections.abc import Collection

from repolm.formats.special import ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

CHATML = (
    "{{- range .Messages }}" + IM_START + "{{ .Role }}\n{{ .Content }}" + IM_END + "\n"
    "{{ end }}" + IM_START + "assistant\n"
)
FIM = FIM_PREFIX + "{{ .Prompt }}" + FIM_SUFFIX + "{{ .Suffix }}" + FIM_MIDDLE


def modelfile(
    gguf_name: str,
    context: int,
    vocab: Collection[str],
    eos: str | None,
    chat_template: str | None,
    fim: bool = True,
) -> str:
    """The Modelfile's text, for a GGUF next to it named `gguf_name`; `fim` False: the model
    has the FIM tokens but did not learn them (repolm's record in its config.json)."""
    fim = fim and {FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE} <= set(vocab)
    chatml = bool(chat_template) and IM_START in (chat_template or "") and IM_START in vocab
    plain = "{{ .Prompt }}"
    if chatml:
        plain = "{{- if .Messages }}" + CHATML + "{{ else }}{{ .Prompt }}{{ end }}"
    template = "{{- if .Suffix }}" + FIM + "{{ else }}" + plain + "{{ end }}" if fim else plain
    stops = [t for t in dict.fromkeys((eos, ENDOFTEXT, IM_END)) if t and t in vocab]
    lines = [
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        f"PARAMETER num_ctx {context}",
        *(f'PARAMETER stop "{t}"' for t in stops),
    ]
    return "\n".join(lines) + "\n"
