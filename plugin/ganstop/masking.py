"""Secret masking: a password inside any URL is replaced before it is shown or logged."""

import re

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")


def mask(text: str) -> str:
    """``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``; everything else unchanged."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)
