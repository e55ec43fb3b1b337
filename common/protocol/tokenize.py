"""POST /tokenize and /detokenize: a text model's own tokenizer, in the shapes of llama.cpp's
server (`content`, `add_special`, `with_pieces`; answers `tokens`, `content`) and of vLLM
(`prompt` or chat `messages`, `add_special_tokens`, `return_token_strs`; answers `count`,
`max_model_len`, `tokens`, `token_strs`, `prompt`). One request type per path takes either; an
answer carries both servers' fields, so either's clients read it as they expect."""

from __future__ import annotations

from typing import Any

from common.protocol.base import (
    OpenAIRequest,
    OpenAIResponse,
    Sparse,
    absent_when_none,
    extension,
)


class TokenizeRequest(OpenAIRequest):
    model: str = extension(..., min_length=1)
    # The text: llama.cpp's `content`, or vLLM's `prompt`; or vLLM's chat `messages`, rendered
    # with the model's chat template (and `tools`) as a chat request would be.
    content: str | None = extension()
    prompt: str | None = extension()
    messages: list[dict[str, Any]] | None = extension()
    tools: list[dict[str, Any]] | None = extension()
    # The model's beginning-of-sequence token in front (a text only; a chat's tokens are the
    # template's). llama.cpp's name defaults to false, vLLM's to true.
    add_special: bool | None = extension()
    add_special_tokens: bool | None = extension()
    parse_special: bool = extension(True)  # control tokens written in the text are parsed
    with_pieces: bool = extension(False)  # llama.cpp's: each token as {id, piece}
    return_token_strs: bool = extension(False)  # vLLM's: each token's text in `token_strs`
    # vLLM's chat switches: only their defaults can be honoured (the prompt ends ready for the
    # assistant's answer; the server's own template).
    add_generation_prompt: bool = extension(True)
    continue_final_message: bool = extension(False)
    chat_template: str | None = extension()
    chat_template_kwargs: dict[str, Any] | None = extension()
    mm_processor_kwargs: dict[str, Any] | None = extension()


class TokenPiece(OpenAIResponse):
    """llama.cpp's token with its piece: text where its bytes are UTF-8, else the bytes."""

    id: int
    piece: str | list[int]


class TokenizeResponse(Sparse):
    model_config = absent_when_none("token_strs")
    absent = ("token_strs",)

    tokens: list[int] | list[TokenPiece]
    count: int
    max_model_len: int
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIRequest):
    model: str = extension(..., min_length=1)
    tokens: list[int] = extension(...)


class DetokenizeResponse(OpenAIResponse):
    content: str  # llama.cpp's name
    prompt: str  # vLLM's
