"""Property-style fault injection: random flows and faults, invariants checked after each run."""
