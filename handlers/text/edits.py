"""POST /v1/edits: an instruction applied to an input, run as a chat with the edit template."""

from __future__ import annotations

from common.protocol.base import new_id
from common.protocol.chat import ChatCompletion, ChatCompletionRequest, ChatMessage
from common.protocol.completions import Edit, EditChoice, EditRequest
from common.store import ModelStore
from handlers.text.chat import create_chat_completion

# A registry entry may override both with `templates: {edit: ..., edit_system: ...}`;
# {instruction} and {input} are replaced with the request's fields.
DEFAULT_EDIT_SYSTEM = (
    "You are a careful editor. Apply the instruction to the input text. "
    "Reply with the edited text only, without any comment."
)
DEFAULT_EDIT_TEMPLATE = "Instruction: {instruction}\n\nInput:\n{input}"


def edit_messages(request: EditRequest, templates: dict[str, str]) -> list[ChatMessage]:
    template = templates.get("edit", DEFAULT_EDIT_TEMPLATE)
    system = templates.get("edit_system", DEFAULT_EDIT_SYSTEM)
    user = template.replace("{instruction}", request.instruction).replace("{input}", request.input)
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]


def create_edit(request: EditRequest, store: ModelStore) -> Edit:
    config = store.registry.resolve(request.model)
    chat = ChatCompletionRequest(
        model=request.model,
        messages=edit_messages(request, config.templates),
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        seed=request.seed,
    )
    result = create_chat_completion(chat, store)
    assert isinstance(result, ChatCompletion)
    return Edit(
        id=new_id("edit-"),
        created=result.created,
        model=result.model,
        choices=[
            EditChoice(text=c.message.content or "", index=c.index, finish_reason=c.finish_reason)
            for c in result.choices
        ],
        usage=result.usage,
    )
