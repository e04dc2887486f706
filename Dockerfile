# syntax=docker/dockerfile:1
# registry-auth: build a wheel, install it into a slim runtime image that runs as non-root.
# Keys, users and config come from mounted volumes/secrets; none are baked in. The root
# filesystem may be read-only: point `state.path` (refresh tokens, SQLite) at a volume such as
# /var/lib/registry-auth, or use `state.backend: etcd` (see deploy/ and docs/operations.md);
# beside a read-only config (the default), the start is refused, naming `state.path`. The
# workers' metrics files need a writable /tmp too: `docker run --read-only --tmpfs /tmp`.

FROM python:3.11-slim-bookworm AS build
# One virtual environment, copied whole into the runtime image: no wheels left behind in a
# layer of it.
RUN python -m venv /opt/registry-auth \
 && /opt/registry-auth/bin/pip install --no-cache-dir --upgrade "pip>=24"
WORKDIR /src
# The dependencies first, from pyproject.toml alone: a change to the code or the README
# builds on this layer instead of downloading every dependency again.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
 && /opt/registry-auth/bin/pip install --no-cache-dir -r requirements.txt
COPY README.md ./
COPY app ./app
RUN /opt/registry-auth/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 registry-auth \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/registry-auth --create-home registry-auth
COPY --from=build /opt/registry-auth /opt/registry-auth
ENV PATH=/opt/registry-auth/bin:$PATH
USER 10001:10001
WORKDIR /var/lib/registry-auth
ENV REGISTRY_AUTH_CONFIG=/etc/registry-auth/config.yaml \
    PYTHONUNBUFFERED=1
EXPOSE 5001
# The address and scheme come from the config (`listen`, `tls`), so the check follows them.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["registry-auth", "healthcheck", "--timeout", "2"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["registry-auth", "serve"]
