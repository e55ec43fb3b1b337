"""Text generation, for every endpoint that asks for it.

Chat Completions (chat.py), Anthropic's Messages (messages.py) and the Responses API
(responses/) each parse their request into a neutral `ConversationRequest`, run it through
conversation/ (the checks they share, the engine driven for each choice, tool calls and
reasoning split out), and render the neutral events it yields in their own shape, streamed or
collected. Legacy completions (completions.py) drive the engine on a prompt with no
conversation; edits (edits.py) are a chat with the edit template.

What all of them share sits beside them: checks.py (sampling, budgets, the prompt against the
context, a request's whole work), stream.py (one choice read from the engine: UTF-8, stops,
budgets, finish reasons, usage), stops.py and logprobs.py.
"""
