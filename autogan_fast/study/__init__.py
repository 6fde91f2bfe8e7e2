"""The study: the paper's research questions measured with statistics (`python -m autogan_fast.study`).

`plan` (settings and the sub-runs, each an ordinary run folder), `runner` (drives each sub-run's job of
`jobs`: search, training, proxy rescoring; resumable, torchrun ranks taking whole sub-runs), `results` (a
sub-run's status and result.json, read from its folder), `summary` (study.json and study.md from the
sub-runs' files), `statistics` (intervals, tests, verdicts) and `plots` (matplotlib, an optional extra).
"""
