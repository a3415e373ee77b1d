"""Sample-quality metrics behind one registry (see ``registry``)."""
