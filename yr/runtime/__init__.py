"""Runtimes decide how an instance comes to exist and how its death is learned."""
