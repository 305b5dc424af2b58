"""syncclass: shared core of the synchronous-classroom media system.

The modules here hold models, protocol, layout geometry, audio math, timecodes and
analytics reducers. They never open sockets or devices; `mixer`, `edge_agent` and
`recorder` feed them.
"""

__version__ = "0.1.0"
