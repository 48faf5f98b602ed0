"""Python frames read from the interpreter's own structures: per-version layouts, a live process's thread
states, a user-space frame walk, code-object symbolization, and the merge with native stacks."""
