"""msarch benchmarks: `python -m bench --help`.

Figures go to bench/results/; the summary is docs/benchmarks.md.
"""
