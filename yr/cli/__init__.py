"""The ``yr`` command: what runs, who owns it, what it waits on, its stacks and its output."""
