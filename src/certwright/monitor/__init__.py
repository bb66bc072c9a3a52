"""The monitor: expected certificates against what was issued, installed and served."""
