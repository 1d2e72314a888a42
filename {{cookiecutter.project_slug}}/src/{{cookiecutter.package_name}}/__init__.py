"""A FastAPI service whose background tasks are tracked by the vendored `taskflow` module.

One module per lifecycle pattern, each an ASGI app of its own (README.md, "Which lifecycle pattern?"):
`main` (TaskAdmin with the dashboard), `worker` (init_app, no dashboard), `lifespan` (manual lifespan).
"""
