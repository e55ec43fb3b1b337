"""One stateless handler per endpoint: validate, get the model, run it, shape the response.

A handler takes a parsed request and the model store, and returns an OpenAI response object
or, for a stream, an iterator of chunk objects. It knows nothing of HTTP, Lambda or RunPod.
Errors are raised as common.errors types; for a stream, every error the request can cause
is raised before the first chunk is yielded, so adapters can still answer it with a status.
"""
