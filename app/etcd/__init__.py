"""Publishing realm/issuer/service to etcd for the registry: the only package that talks to etcd."""
