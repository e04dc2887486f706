"""The registry token protocol as pure functions: scopes, token requests, claims. No I/O."""
