"""Read run directories and compute the paper's metrics (no training imports)."""
