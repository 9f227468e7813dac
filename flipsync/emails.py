"""The one rule for turning an email address into the key flipsync matches people by.

Constant Contact matches email addresses without regard to case, so flipsync does too:
the key is the address with surrounding blanks removed and ASCII and Unicode letters
lower-cased (``str.lower``). Not ``str.casefold``: casefold also rewrites some non-ASCII
characters (German sharp s becomes "ss"), which would make two addresses that Constant
Contact keeps apart look like one person here. Every place that keys, compares or looks up
people by email (records, the mirror and contact exports, outcomes, import errors,
`explain`, the client's lookup, CSV record keys, rule and clean-up patterns) uses it.
"""

from __future__ import annotations


def normalize_email(email: str) -> str:
    """The match key of an email address: trimmed and lower-cased."""
    return email.strip().lower()
