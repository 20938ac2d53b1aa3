"""What train needs beyond the data and the network: config, distribution, objective, learning
rate, time budget, checkpoints, summaries, validation (map: pose/__init__.py)."""
