"""Everything that talks to etcd lives here: no other package imports an etcd client."""
