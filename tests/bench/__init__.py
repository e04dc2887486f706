"""The performance benchmark (not part of the pass/fail test run): `scripts/bench`."""
