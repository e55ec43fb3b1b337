"""OpenAI's Responses API: create.py generates a response from its input items (items.py reads
them and the tools; events.py renders the conversation's events as the API's semantic stream
events and the response object), stored.py reads stored responses back, one caller's at a time."""
