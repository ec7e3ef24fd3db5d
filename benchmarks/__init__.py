"""Benchmarks of the daemon against baselines measured in the same run (`make bench`).

`python -m benchmarks [--quick] [--only NAME]` runs them, prints a table and writes
`benchmarks/results/latest.json` and `latest.md`. Modules: `stats` (pure figures and
summaries), `report` (table, JSON, machine description), `harness` (the control plane,
the daemon subprocess, viewers), `rawacp` (bare stdio baselines), `procstat` (/proc), and
one module per figure. `eventlog_bench` is the event log's own micro-benchmark.
"""
