"""flipsync: keeps a Constant Contact account in step with Flipcause, with consent rules you can read."""

__version__ = "0.1.0"
