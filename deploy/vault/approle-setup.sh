#!/usr/bin/env bash
# Sets up AppRole auth for Keyward on Vault or OpenBao (use `vault` or `bao`; both read VAULT_ADDR/VAULT_TOKEN).
# Prints the role_id for keyward.yaml and writes a secret_id to ./approle-secret-id (mode 0600).
set -euo pipefail
cli=${VAULT_CLI:-bao}
here=$(dirname "$0")

"$cli" policy write keyward "$here/keyward-policy.hcl"
"$cli" auth enable approle 2>/dev/null || true          # already enabled is fine
# Short-lived tokens, renewed by Keyward at two thirds of their TTL and replaced by a new login at max TTL.
"$cli" write auth/approle/role/keyward token_policies=keyward token_ttl=1h token_max_ttl=24h secret_id_ttl=0
echo "role_id: $("$cli" read -field=role_id auth/approle/role/keyward/role-id)"
umask 077
"$cli" write -f -field=secret_id auth/approle/role/keyward/secret-id > approle-secret-id
echo "secret_id written to ./approle-secret-id (point secrets.vault.auth.approle.secret_id_file at it)"
