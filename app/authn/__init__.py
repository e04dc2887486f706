"""Authentication: backends that decide who a client is. Backends never see HTTP."""
