"""The TBPTT reach map: `grid.py` turns axes into points, `results.py` keeps results.csv and
sweep.json, `runner.py` trains the points on Ray, `heatmap.py` draws the map. Only
`runner.py` imports Ray, and only inside its functions."""
