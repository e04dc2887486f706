"""Reusable support for integration tests: real programs started on free loopback ports.

procs (start/wait/stop by PID), registry (docker-registry 2.8 with auth: token:), oci (offline
image layouts), skopeo (the real client, isolated per test), authserver (our service as a
subprocess), stack (token service + registry wired together).
"""
