"""openYuanrong's import paths for the proxy types (``yr.decorator.*``), kept for ported code."""
