"""Built-in tasks used by fulmen's examples and benchmarks."""
