# syntax=docker/dockerfile:1
# The distribution registry 2.8 started by deploy/registry-start.sh: it reads realm/issuer/service
# from etcd (as LAIN's registry does) and execs `registry serve`. Build context: deploy/.
FROM registry:2.8.3
# The script needs curl and jq. The base image's Alpine release fixes their versions; pin the
# base by digest (registry:2.8.3@sha256:...) where builds must be reproducible.
# hadolint ignore=DL3018
RUN apk add --no-cache curl jq
COPY registry-start.sh /usr/local/bin/registry-start.sh
ENV REGISTRY_BIN=registry
STOPSIGNAL SIGTERM
# Run by sh, so the file mode from the checkout does not matter (and no BuildKit-only COPY --chmod).
ENTRYPOINT ["/bin/sh", "/usr/local/bin/registry-start.sh"]
CMD ["/etc/docker/registry/config.yml"]
