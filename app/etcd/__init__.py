"""Everything that talks to etcd: publishing realm/issuer/service for the registry, and the
refresh-token store. No other package imports an etcd client."""
