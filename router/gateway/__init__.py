"""The request path: client -> auth -> routing -> attempts -> relay -> record.

``handler`` reads and answers the client; ``auth`` and ``limits`` check it; ``routing`` and
``snapshots`` pick the candidates; the attempt loop calls the adapters; ``recorder`` writes the
history in the background; ``health`` and ``probe`` watch the providers between requests.
"""
