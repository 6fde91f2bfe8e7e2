"""Derived training (`loop`: its state and loop), beside the search's `nas`."""
