"""DyTopo as a service: runs submitted over HTTP (`dytopo serve`) or MCP (`dytopo mcp`).

`RunService` (runs.py) queues, runs, persists and streams runs on one shared backend; `app.py`
puts it behind HTTP. Only `models` and `settings` import without the serve extra.
"""
