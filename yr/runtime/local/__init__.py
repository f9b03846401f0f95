"""The embedded local runtime: every instance a real process on this machine."""
