"""One generation, three dialects.

Chat Completions, Responses and Anthropic's Messages are renderings of the same thing:
- each dialect parses its request into a `ConversationRequest` (generate.py; its plan, plan.py:
  the conversation as turns (turns.py), the tools offered, the tool choice and the output
  grammar; plus sampling, budget and stops);
- `generate` (generate.py) runs it and yields one stream of neutral events (events.py): text
  and reasoning deltas, a call started / its arguments / its end, each choice's finish, usage;
- each dialect's handler (handlers/text/chat.py, messages.py, responses/) renders those events
  in its own shape, streamed or collected.

Every check, the grammar, logprobs, stop sequences, cancellation and metering live here once.
"""
