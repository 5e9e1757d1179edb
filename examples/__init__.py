"""Example apps built on zq; run them from the repository root (see each README)."""
