"""Task prompts of the paper (Fig. 5-10) and the one way a prompt is shown to the model."""
from __future__ import annotations

INPUT_HEADER = "### Input:\n"
RESPONSE_HEADER = "\n### Response:\n"

DEFAULT_SEMANTIC_TEMPLATE = (
    "The user has interacted with items {history} in chronological order. "
    "Can you predict the next possible item that the user may expect?"
)


def render_for_model(prompt: str) -> str:
    """The model's input text for a task prompt; the answer (then EOS) follows it directly."""
    return f"{INPUT_HEADER}{prompt}{RESPONSE_HEADER}"


def semantic_prompt(history_sids: list[str], template: str = DEFAULT_SEMANTIC_TEMPLATE) -> str:
    """Semantic task (Fig. 5): SID history (oldest first) -> next SID."""
    return template.format(history=", ".join(history_sids))
