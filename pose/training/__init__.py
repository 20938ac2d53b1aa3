"""What train needs beyond the data and the network: its config (map: pose/__init__.py)."""
