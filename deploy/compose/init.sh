#!/bin/sh
# One-shot setup for the compose stack, run as root in the registry-auth image (the `init`
# service): the first signing key, an empty users file, the volume handed to the service's user,
# and the public bundle copied for the registry. Idempotent: an existing key ring is kept, so
# re-running it after `keys add`/`keys retire` just ships the current bundle.
#
# Environment (defaults are the container's paths):
#   DATA_DIR    /var/lib/registry-auth   keys/, users.htpasswd, registry-auth.db
#   BUNDLE_DIR  /bundle                  where the registry reads bundle.pem
#   OWNER       10001:10001              the service's user (uid:gid)
set -eu
data=${DATA_DIR:-/var/lib/registry-auth}
bundle_dir=${BUNDLE_DIR:-/bundle}
owner=${OWNER:-10001:10001}

# The volume starts out as the image's directory (the service's user's) or root's. It is
# handed to the service's user first, and everything in it is then done as that user: root
# acting in a directory another user owns could be redirected by a symlink (registry-auth run
# as root refuses such a directory).
as_owner() { setpriv --reuid="${owner%%:*}" --regid="${owner##*:}" --clear-groups "$@"; }
mkdir -p "$data"
chown "$owner" "$data"
if [ -f "$data/keys/keyring.json" ]; then
  echo "init: keeping the existing key ring in $data/keys"
else
  as_owner registry-auth keys generate --keys-dir "$data/keys"
fi
if [ ! -f "$data/users.htpasswd" ]; then
  as_owner sh -c 'umask 077 && : >"$1"' sh "$data/users.htpasswd"
  echo "init: created an empty $data/users.htpasswd: add users with" \
    "\`docker compose run --rm admin users add NAME\`"
fi
# Atomic for a registry that starts meanwhile: copy (read as the owner), then rename.
as_owner cat "$data/keys/bundle.pem" >"$bundle_dir/.bundle.pem.tmp"
chmod 0644 "$bundle_dir/.bundle.pem.tmp"
mv -f "$bundle_dir/.bundle.pem.tmp" "$bundle_dir/bundle.pem"
echo "init: registry bundle: $bundle_dir/bundle.pem"
