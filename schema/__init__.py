"""The SQL migrations, numbered; installed as ``router.schema`` (package data)."""
