#!/bin/sh
# Start docker-registry with realm/issuer/service taken from etcd, as LAIN's registry does.
#
#   deploy/registry-start.sh CONFIG.yml
#
# registry-auth publishes {"realm","issuer","service"} to ETCD_KEY; this script reads it and
# passes REGISTRY_AUTH_TOKEN_REALM/_ISSUER/_SERVICE to the registry, which override its config
# file (that file keeps auth.token.rootcertbundle and everything else). Unlike LAIN's registry,
# which silently ran WITHOUT auth when the key was missing, this waits up to ETCD_WAIT seconds
# for a complete record and refuses to start otherwise.
#
# Environment (defaults):
#   ETCD_ENDPOINT  http://127.0.0.1:2379       one etcd client URL
#   ETCD_KEY       /lain/config/auth/registry
#   ETCD_API       v2                           v2 (GET /v2/keys) or v3 (the JSON gateway)
#   ETCD_WAIT      60                           seconds to wait for the key
#   REGISTRY_BIN   docker-registry              `registry` in the upstream image
# Needs: curl, jq.
set -eu

config=${1:?usage: $0 CONFIG.yml}
endpoint=${ETCD_ENDPOINT:-http://127.0.0.1:2379}
key=${ETCD_KEY:-/lain/config/auth/registry}
api=${ETCD_API:-v2}
wait_seconds=${ETCD_WAIT:-60}
registry=${REGISTRY_BIN:-docker-registry}

read_record() {
  if [ "$api" = v3 ]; then
    b64key=$(printf '%s' "$key" | base64 | tr -d '\n')
    curl -fsS --max-time 5 -X POST "$endpoint/v3/kv/range" -d "{\"key\":\"$b64key\"}" |
      jq -r '.kvs[0].value // empty | @base64d'
  else
    curl -fsS --max-time 5 "$endpoint/v2/keys$key" | jq -r '.node.value // empty'
  fi
}

field() {
  printf '%s' "$record" | jq -r --arg f "$1" 'if type == "object" then .[$f] // "" else "" end'
}

deadline=$(( $(date +%s) + wait_seconds ))
while :; do
  record=$(read_record 2>/dev/null || true)
  if [ -n "$record" ] && printf '%s' "$record" | jq -e . >/dev/null 2>&1; then
    realm=$(field realm) issuer=$(field issuer) service=$(field service)
    if [ -n "$realm" ] && [ -n "$issuer" ] && [ -n "$service" ]; then
      break
    fi
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "registry-start: no complete {realm,issuer,service} at $endpoint ($api) $key" \
      "after ${wait_seconds}s; refusing to start the registry without token auth" >&2
    exit 1
  fi
  sleep 1
done

echo "registry-start: token auth from etcd: realm=$realm issuer=$issuer service=$service" >&2
export REGISTRY_AUTH_TOKEN_REALM="$realm"
export REGISTRY_AUTH_TOKEN_ISSUER="$issuer"
export REGISTRY_AUTH_TOKEN_SERVICE="$service"
exec "$registry" serve "$config"
