"""The study: the paper's research questions measured with statistics (`python -m autogan_fast.study`).

So far: `statistics` (intervals, tests and verdicts). The command itself, its plan of sub-runs and its
plots are still to come.
"""
