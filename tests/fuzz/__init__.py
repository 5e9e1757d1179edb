"""Hostile input for zq: frame generators (strategies) and a raw-TCP flood (tcp)."""
