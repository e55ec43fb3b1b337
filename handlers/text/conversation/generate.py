"""A conversation generated: the checks every dialect shares, the engine driven for each
choice, and its text split into content and tool calls, as neutral events."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from common import metering
from common.errors import InvalidRequest
from common.image_input import ImageLimits, read_images
from common.protocol.base import new_id
from common.store import ModelStore
from common.turns import AUDIO_MARKER, ChatTurn, ImageRef
from handlers.capabilities import require
from handlers.text.checks import (
    check_context,
    check_prompt_size,
    checked_budget,
    sampling_for,
    text_model,
    token_budget,
)
from handlers.text.conversation import events
from handlers.text.conversation.plan import ChatPlan
from handlers.text.stops import StopMatcher
from handlers.text.stream import ChoiceStream, Piece, started_choices
from layers import reasoning, tool_formats
from layers.text import TextModel
from layers.tool_formats.base import ToolFormat

log = logging.getLogger("stratus.tool_calls")


@dataclass(frozen=True)
class ConversationRequest:
    """Everything a dialect asks of one conversation generated, in neutral terms."""

    model: str
    plan: ChatPlan
    # Sampling fields the request set (layers.text.Sampling's names, and logit_bias); unset
    # ones come from the model's registry parameters, then the engine's defaults.
    sampling: Mapping[str, Any] = field(default_factory=dict)
    budget: int | None = None  # the completion's token budget, if the request names one
    # A budget that is only a ceiling (Messages' max_tokens, which clients set far above any
    # context) is cut to the room the prompt leaves instead of refused.
    budget_is_ceiling: bool = False
    n: int = 1
    stops: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no log probabilities
    call_prefix: str = "call_"  # of the ids of calls made (common.protocol.base.new_id)
    # False: a reasoning model answers at once (reasoning_effort "none", enable_thinking false,
    # Messages' thinking disabled); a model without reasoning is the same either way.
    thinking: bool = True
    # Tokens a reasoning model may think before the end of its block is forced (None: as long
    # as it likes): Messages' thinking.budget_tokens, or a reasoning effort's.
    reasoning_budget: int | None = None
    # The request's reasoning effort (none ... xhigh), for templates that read one (GPT-OSS's).
    reasoning_effort: str | None = None
    # How images in the conversation are read: size caps, and which hosts URLs may reach.
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    # The dialect's names for the fields the checks may refuse.
    prompt_param: str = "messages"
    budget_param: str = "max_tokens"
    choices_param: str = "n"


def count_prompt(conversation: ConversationRequest, store: ModelStore) -> int:
    """The prompt tokens the generation would count (its usage's prompt_tokens), without
    generating: every check up to the prompt's own is made."""
    turns = _read_images(conversation, store)
    with store.use(conversation.model) as loaded:
        model = text_model(loaded, conversation.model)
        prompt = conversation_prompt(conversation, model, turns)
        check_context(model, len(prompt), None, prompt_param=conversation.prompt_param)
        return len(prompt)


# The speech-to-text model that hears audio in a conversation: OpenAI's name for it, which the
# registry gives its transcription model (the built-in whisper tiny.en).
LISTENER = "whisper-1"


def _hear(turns: list[ChatTurn], store: ModelStore) -> list[ChatTurn]:
    """The turns with each audio clip's transcript where it sat, heard by the registry's
    `whisper-1` (else its first faster-whisper model), before the text model is loaded; a 400
    naming the part when no model here hears, or when its audio cannot be decoded."""
    clips = [clip for turn in turns for clip in turn.audio]
    if not clips:
        return turns
    listener = _listener(store)
    if listener is None:
        raise InvalidRequest(
            "No model here hears audio (the registry has no faster-whisper model to "
            "transcribe it): send the text instead.",
            param=clips[0].param,
            code="audio_not_supported",
        )
    heard: list[ChatTurn] = []
    seconds = 0.0
    with store.use(listener) as loaded:
        model = require(loaded, "transcribe", listener, "transcribe")
        for turn in turns:
            content = turn.content
            for clip in turn.audio:
                try:
                    transcript = model.transcribe(
                        clip.data,
                        task="transcribe",
                        language=None,
                        prompt=None,
                        temperature=0.0,
                        word_timestamps=False,
                    ).collect()
                except InvalidRequest as unreadable:
                    raise InvalidRequest(
                        f"'{clip.param}.input_audio' ({clip.format}) cannot be heard: "
                        f"{unreadable.message}",
                        param=f"{clip.param}.input_audio",
                    ) from None
                seconds += transcript.duration
                content = content.replace(AUDIO_MARKER, transcript.text.strip(), 1)
            heard.append(replace(turn, content=content, audio=()) if turn.audio else turn)
    metering.count("audio_seconds_in", seconds)
    return heard


def _listener(store: ModelStore) -> str | None:
    registry = store.registry
    if LISTENER in registry:
        return LISTENER
    return next((c.name for c in registry.models if c.backend == "faster-whisper"), None)


def _read_images(conversation: ConversationRequest, store: ModelStore) -> list[ChatTurn]:
    """The turns with their images read (fetched, checked, decoded), before the model is
    loaded or a sequence started: a model without a projector refuses them first."""
    turns = _hear(list(conversation.plan.turns), store)
    refs = [image for turn in turns for image in turn.images if isinstance(image, ImageRef)]
    if not refs:
        return list(turns)
    if not store.registry.resolve(conversation.model).reads_images:
        raise InvalidRequest(
            f"The model '{conversation.model}' does not read images (it has no projector, "
            "`mmproj`, in its registry entry); send text, or choose a vision model.",
            param=refs[0].param,
            code="images_not_supported",
        )
    pictures = iter(read_images(refs, conversation.image_limits))
    metering.count("input_images", len(refs))  # in prompt_tokens too; counted apart
    return [
        replace(turn, images=tuple(next(pictures) for _ in turn.images)) if turn.images else turn
        for turn in turns
    ]


def conversation_prompt(
    conversation: ConversationRequest, model: TextModel, turns: Sequence[ChatTurn]
) -> list[int]:
    """The conversation's tokens, refused from its size first when it cannot fit."""
    sent = sum(len(turn.content.encode()) for turn in turns)
    check_prompt_size(model, sent, conversation.prompt_param)
    return model.chat_prompt(
        turns, conversation.plan.tools, conversation.thinking, effort=conversation.reasoning_effort
    )


def generate(conversation: ConversationRequest, store: ModelStore) -> Iterator[events.Event]:
    """Every event of the generation; every error a request can cause comes before the first
    (`Started`), so that a stream can still be refused with its status."""
    plan = conversation.plan
    turns = _read_images(conversation, store)
    with store.use(conversation.model) as loaded:
        model = text_model(loaded, conversation.model)
        defaults = store.registry.resolve(conversation.model).parameters
        prompt = conversation_prompt(conversation, model, turns)
        budget = checked_budget(
            model,
            [(len(prompt), conversation.prompt_param)],
            conversation.n,
            token_budget(conversation.budget, defaults),
            named=conversation.budget is not None and not conversation.budget_is_ceiling,
            logit_bias=conversation.sampling.get("logit_bias"),
            budget_param=conversation.budget_param,
            choices_param=conversation.choices_param,
        )
        thinks = model.reasoning if conversation.thinking else None
        fmt: ToolFormat = model.tool_format
        grammar = plan.grammar
        if grammar is not None:  # a JSON answer, in what the format wraps answers in
            grammar = fmt.answer_grammar(grammar, model.grammar_literal)
        if plan.mode != "none":
            grammar = fmt.grammar(
                plan.tools,
                required=plan.mode == "required",
                parallel=not plan.single_call,
                literal=model.grammar_literal,
            )
        # A constrained answer (tools, JSON) only after the block; a budget bounds the block.
        if thinks is not None and (
            grammar is not None or conversation.reasoning_budget is not None
        ):
            grammar = reasoning.grammar(
                grammar,
                thinks,
                model.reasoning_opens,
                _thinking_room(model, grammar, thinks, budget, conversation.reasoning_budget),
                literal=model.grammar_literal,
            )
        samplings = [
            sampling_for(conversation.sampling, defaults, choice=index)
            for index in range(conversation.n)
        ]
        stops = conversation.stops if _text_is_answer(conversation, thinks, fmt) else ()
        completion_tokens = 0
        with started_choices(
            model,
            prompt,
            samplings,
            budget,
            stops,
            grammar=grammar,
            logprobs=conversation.top_logprobs,
        ) as choices:
            yield events.Started(len(prompt), model.fingerprint)
            for index, choice in enumerate(choices):
                split = (
                    reasoning.ReasoningSplitter(thinks, model.reasoning_opens) if thinks else None
                )
                plain = _text_is_answer(conversation, thinks, fmt)
                yield from _choice(index, _Thoughts(index, choice, split), conversation, fmt, plain)
                completion_tokens += choice.completion_tokens
        yield events.TokenUsage(len(prompt), completion_tokens)


# The share of a budget kept for a forced answer beyond its shortest form (a call's arguments, a
# JSON object's values), and the least kept.
ANSWER_SHARE = 4
ANSWER_LEAST = 16


def _thinking_room(
    model: TextModel,
    answer: str | None,
    thinks: reasoning.ReasoningFormat,
    budget: int | None,
    asked: int | None,
) -> int | None:
    """How many tokens the reasoning block may take: what was asked (Messages' budget_tokens,
    an effort's), and, when the answer is forced (a call, JSON) and the completion has a budget,
    no more than leaves the answer its shortest form, the end marker and a share of the rest
    (ANSWER_SHARE, at least ANSWER_LEAST): a model that would think to the end of the budget
    still answers. When even the shortest answer cannot fit, the block is left as asked."""
    if answer is None or budget is None:
        return asked
    fewest = model.fewest_tokens(answer)
    if not fewest:
        return asked  # the answer may be empty or free text: nothing forced to keep room for
    left = budget - fewest - len(model.tokenize(thinks.end, add_special=False))
    if left <= 0:
        return asked
    room = max(1, left - max(ANSWER_LEAST, left // ANSWER_SHARE))
    return room if asked is None else min(asked, room)


class _Thoughts:
    """A choice's pieces of content; its reasoning, split out as it streams, goes to
    `reasoning` (a list of events the caller sends before the next piece)."""

    def __init__(
        self, choice: int, stream: ChoiceStream, split: reasoning.ReasoningSplitter | None
    ) -> None:
        self.stream = stream
        self._choice = choice
        self._split = split
        self.reasoning: list[events.Event] = []

    def __iter__(self) -> Iterator[Piece]:
        if self._split is None:
            yield from self.stream
            return
        for piece in self.stream:
            yield from self._pieces(self._split.feed(piece.text), piece)
        yield from self._pieces(self._split.finish(), Piece(""))

    def _pieces(self, parts: list[tuple[str, str]], piece: Piece) -> Iterator[Piece]:
        for kind, text in parts:
            if kind == "reasoning":
                self.reasoning.append(events.ReasoningDelta(self._choice, text))
            else:
                yield Piece(text, piece.tokens)
        if self.reasoning:  # nothing of the content came after it yet: sent now, in order
            yield Piece("")

    def drain(self) -> list[events.Event]:
        out, self.reasoning = self.reasoning, []
        return out


def _text_is_answer(
    conversation: ConversationRequest, thinks: reasoning.ReasoningFormat | None, fmt: ToolFormat
) -> bool:
    """Whether the generated text is the answer as it is: then the engine matches the stop
    sequences itself. Otherwise (reasoning to split out, calls or channels to parse) they are
    matched on the answer's text only: a stop sequence inside a thought does not end it."""
    return conversation.plan.mode == "none" and thinks is None and not fmt.parses_every_answer


def _choice(
    index: int, thoughts: _Thoughts, conversation: ConversationRequest, fmt: ToolFormat, plain: bool
) -> Iterator[events.Event]:
    stream = thoughts.stream
    if plain:
        for piece in thoughts:
            yield from thoughts.drain()
            if piece.text:
                yield events.TextDelta(index, piece.text, piece.tokens)
        yield from thoughts.drain()
        reason = stream.finish_reason or "stop"
        stop = stream.stop_sequence
    else:
        answer = _Answer(index, conversation, fmt)
        for piece in thoughts:
            yield from thoughts.drain()
            yield from answer.feed(piece)
            if answer.stopped:
                break
        yield from thoughts.drain()
        yield from answer.finish()
        reason = stream.finish_reason or "stop"
        stop = answer.stop_sequence
        # Complete calls are the answer, even where the budget ran out in the syntax after
        # them (a format's closing markers spelt as text take many tokens).
        if answer.calls and not answer.cut:
            reason = "tool_calls"
    if stop is not None:
        reason = "stop_sequence"
    yield events.Finished(index, reason, stop, stream.completion_tokens)  # type: ignore[arg-type]


class _Answer:
    """Generated text split into content, reasoning and tool calls, by the model's format: a
    call starts with its id and name, then comes its argument text as it is generated, then
    its end.

    A call that repeats one already made in this answer, name and arguments, is not sent: its
    events are held while it could still be a repeat, and if it is one the answer ends there
    (a small model otherwise loops on the same call until the budget cuts it)."""

    def __init__(self, choice: int, conversation: ConversationRequest, fmt: ToolFormat) -> None:
        self._choice = choice
        self._fmt = fmt
        self._calls_offered = conversation.plan.mode != "none"
        parses = conversation.plan.mode != "none" or fmt.parses_every_answer
        self._parser = fmt.parser(conversation.plan.tools) if parses else tool_formats.PlainText()
        self._stops = StopMatcher(
            conversation.stops
        )  # they end text answers; calls end by the grammar
        self._prefix = conversation.call_prefix
        self._open: events.ToolCallStarted | None = None
        self._arguments: list[str] = []
        self._made: list[tuple[str, str]] = []  # the complete calls so far: name, arguments
        self._held: list[events.Event] = []  # a call's events while it may be a repeat
        self._may_repeat = False  # the open call is, so far, an earlier one's start
        self.stopped = False
        self.cut = False  # the last call never ended
        self.calls = 0

    @property
    def stop_sequence(self) -> str | None:
        return self._stops.matched

    def feed(self, piece: Piece) -> Iterator[events.Event]:
        return self._events(self._parser.feed(piece.text), piece)

    def finish(self) -> Iterator[events.Event]:
        yield from self._events(self._parser.finish(), Piece(""))
        if not self.stopped and (held := self._stops.flush()):
            yield events.TextDelta(self._choice, held)
        if self._open is not None:  # cut by the budget: what it sent stands, it never ended
            self._held, self.cut = [], True
            log.info("A %s tool call was cut before its arguments ended.", self._fmt.name)

    def _events(self, parsed: Iterator[tool_formats.Event], piece: Piece) -> Iterator[events.Event]:
        for event in parsed:
            if self.stopped:
                return
            if not isinstance(event, tool_formats.Arguments):
                yield from self._close_if_complete()
            if isinstance(event, tool_formats.Text):
                text, self.stopped = self._stops.feed(event.text)
                if text:
                    yield events.TextDelta(self._choice, text, piece.tokens)
            elif isinstance(event, tool_formats.Reasoning):
                yield events.ReasoningDelta(self._choice, event.text)
            elif isinstance(event, tool_formats.CallStarted):
                self.calls += 1
                call_id = self._fmt.new_call_id() or new_id(self._prefix)
                self._open = events.ToolCallStarted(self._choice, event.index, call_id, event.name)
                self._may_repeat = any(name == event.name for name, _ in self._made)
                yield from self._send(self._open)
            elif self._open is not None:
                self._arguments.append(event.text)
                yield from self._send(events.ArgumentsDelta(self._choice, event.index, event.text))
        yield from self._close_if_complete()

    def _close_if_complete(self) -> Iterator[events.Event]:
        # The parser counts a call once its arguments are complete, after their last piece.
        if self._open is not None and self._parser.calls > self._open.index and not self.stopped:
            yield from self._close_call()

    def _send(self, event: events.Event) -> Iterator[events.Event]:
        """The event, or held with the rest of its call while the call repeats an earlier one
        so far."""
        assert self._open is not None
        if self._may_repeat:  # checked until the call differs, not on every later fragment
            name, so_far = self._open.name, "".join(self._arguments)
            if any(n == name and a.startswith(so_far) for n, a in self._made):
                self._held.append(event)
                return
            self._may_repeat = False
        held, self._held = self._held, []
        yield from held
        yield event

    def _close_call(self) -> Iterator[events.Event]:
        assert self._open is not None
        call, self._open = self._open, None
        arguments, self._arguments = "".join(self._arguments), []
        if self._held and (call.name, arguments) in self._made:
            self._held, self.stopped, self.calls = [], True, self.calls - 1
            log.info("The model repeated its call of %s; the answer ends before it.", call.name)
            return
        held, self._held = self._held, []
        yield from held
        self._made.append((call.name, arguments))
        yield events.CallDone(self._choice, call.index, call.call_id, call.name, arguments)
