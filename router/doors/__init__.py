"""Front doors: the client dialects the one router serves (chat completions, Messages, ...).

A front door parses its dialect into a :class:`~router.doors.base.RouterRequest` and renders
the router's answers, stream events and errors back in that dialect. The attempt loop in
:mod:`router.gateway.handler` takes a door and never asks which one it is.
"""
