"""The ``provider-router`` command: ``main`` parses, one module per command group does the work."""
