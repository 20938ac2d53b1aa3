"""The figures and what people read: metrics, results.json, the HTML report, sample grids
(map: pose/__init__.py)."""
