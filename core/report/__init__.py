"""What the pages show of runs: typed, confined run readers (runs.py) and pure Plotly figure builders (figures.py)."""
