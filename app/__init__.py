"""registry-auth: the token authorization server for Docker/OCI registries."""

__version__ = "0.1.0"

# The environment variable naming the config file; here so the command line can name it without
# loading the settings.
CONFIG_ENV = "REGISTRY_AUTH_CONFIG"

# How every log line reads, whichever server runs (the CLI's basicConfig, granian's workers).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Libraries that log a line per request at INFO, URL included (a webhook's or an issuer's URL
# may hold a key in its query): only their warnings reach the log.
QUIET_LOGGERS = ("httpx", "httpcore")
