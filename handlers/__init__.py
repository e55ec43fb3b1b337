"""One stateless handler per endpoint: validate, get the model, run it, shape the response.

A handler takes the parsed request (a protocol type from common.protocol) and the model store,
plus what its operation needs from the platform (image limits, the stored responses), and
returns a response object of its API (OpenAI's, or Anthropic's for /v1/messages), a stream of
its chunks or events, or bytes. It knows nothing of HTTP, Lambda or RunPod: adapters/operations
names each handler. Errors are raised as common.errors types; for a stream, every error the
request can cause is raised before the first chunk is yielded, so adapters can still answer it
with a status.

The endpoints of one engine each are modules here (models, embeddings, images, speech,
transcriptions); text generation, which five endpoints and three dialects share, is the
`text` package.
"""
