"""The networks and the files they are exported to: networks/, the export contracts, the TFLite
runtime, warm starts (map: pose/__init__.py)."""
