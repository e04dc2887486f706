"""registry-auth: the token authorization server for Docker/OCI registries."""

__version__ = "0.1.0"
