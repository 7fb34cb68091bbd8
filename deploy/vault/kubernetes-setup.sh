#!/usr/bin/env bash
# Sets up Kubernetes auth for Keyward sidecars on Vault or OpenBao, run from a machine that can reach both
# Vault and the cluster's API server.
#
# Isolation between agents rests on two things this script sets up:
#   1. Audience. The role only accepts tokens whose `aud` holds VAULT_AUDIENCE (default `vault`). The sidecar
#      logs in with its own projected service-account token requested for that audience and mounted in the
#      sidecar only (deploy/kubernetes/sidecar-pod.yaml). The agent container's ordinary token carries the
#      API server's audience and is refused, so the agent cannot log in to Vault itself.
#   2. A templated policy. The token a login yields reads only
#        <KV_MOUNT>/<KV_PREFIX>/<its namespace>/<its service account>   (and everything below it)
#      through Vault identity templating on the login's entity-alias metadata
#      (service_account_namespace, service_account_name), so agent A's token cannot read agent B's secrets.
#      Store each agent's secrets there, e.g. for service account sales-bot in namespace agents:
#        bao kv put -mount=secret agents/agents/sales-bot openai=sk-...
#      and reference them in keyward.yaml as `vault: { path: agents/agents/sales-bot, key: openai }`.
#
# Variables (all optional but the first two):
#   VAULT_ADDR, VAULT_TOKEN   the server, and a token allowed to manage auth methods and policies
#   VAULT_CLI                 `bao` (default) or `vault`, or a path to either
#   NAMESPACE                 namespaces whose service accounts may log in, comma-separated (default agents)
#   SERVICE_ACCOUNT           service accounts that may log in, comma-separated, globs allowed (default *:
#                             any in NAMESPACE; the policy still confines each one to its own secrets)
#   VAULT_AUDIENCE            audience the sidecar's token must carry (default vault; keep it in step with
#                             the projected volume's `audience`)
#   ROLE                      Kubernetes auth role (default keyward; secrets.vault.auth.kubernetes.role)
#   AUTH_MOUNT                path of the Kubernetes auth method (default kubernetes; ...kubernetes.mount)
#   POLICY                    name of the templated policy written here (default keyward-kubernetes)
#   KV_MOUNT, KV_PREFIX       KV v2 mount and path prefix of the agents' secrets (default secret, agents)
#   KV1_MOUNT                 also grant the same per-agent paths on this KV v1 mount (default: none)
#   OAUTH2_WRITE_BACK         `true`: also allow create/update on the agent's own KV v2 paths, which Keyward
#                             needs to store a rotated OAuth2 refresh token (default false: read only)
#   KUBERNETES_HOST           API server URL as Vault reaches it (default https://kubernetes.default.svc)
#   KUBERNETES_CA_FILE        PEM file with the cluster's CA (default: none; in-cluster Vault uses its own)
#   REVIEWER_JWT              token Vault calls TokenReview with: a service account bound to the ClusterRole
#   REVIEWER_JWT_FILE         system:auth-delegator (or a file holding it). Without either, Vault in the
#                             cluster uses its own service account; outside, it uses the logging-in token,
#                             which the audience above makes unusable against the API: set one of them.
#   TOKEN_TTL, TOKEN_MAX_TTL  Vault token lifetimes (default 1h, 24h); Keyward renews and logs in again
set -euo pipefail
cli=${VAULT_CLI:-bao}
namespace=${NAMESPACE:-agents}
service_account=${SERVICE_ACCOUNT:-*}
audience=${VAULT_AUDIENCE:-vault}
role=${ROLE:-keyward}
mount=${AUTH_MOUNT:-kubernetes}
policy=${POLICY:-keyward-kubernetes}
kv_mount=${KV_MOUNT:-secret}
kv_prefix=${KV_PREFIX:-agents}
kv1_mount=${KV1_MOUNT:-}
capabilities='"read"'
if [ "${OAUTH2_WRITE_BACK:-false}" = true ]; then
  capabilities='"read", "create", "update"'
fi

# The auth method first: the policy needs its accessor.
if ! "$cli" read "sys/auth/$mount" >/dev/null 2>&1; then
  "$cli" auth enable -path="$mount" kubernetes
fi
accessor=$("$cli" read -field=accessor "sys/auth/$mount")
case $accessor in
  auth_kubernetes_*) ;;
  *) echo "sys/auth/$mount is not a kubernetes auth method (accessor: $accessor)" >&2; exit 1 ;;
esac

# When Vault runs in the cluster it can use its own service account for TokenReview; otherwise give it the
# API address, the cluster CA and a reviewer token. The token goes through stdin, never on a command line.
reviewer=${REVIEWER_JWT:-}
if [ -z "$reviewer" ] && [ -n "${REVIEWER_JWT_FILE:-}" ]; then
  reviewer=$(cat "$REVIEWER_JWT_FILE")
fi
config=(kubernetes_host="${KUBERNETES_HOST:-https://kubernetes.default.svc}")
if [ -n "${KUBERNETES_CA_FILE:-}" ]; then
  config+=(kubernetes_ca_cert=@"$KUBERNETES_CA_FILE")
fi
if [ -n "$reviewer" ]; then
  printf '%s' "$reviewer" | "$cli" write "auth/$mount/config" "${config[@]}" token_reviewer_jwt=- >/dev/null
else
  "$cli" write "auth/$mount/config" "${config[@]}" >/dev/null
fi

# One policy for every agent: each token resolves the paths to its own namespace and service account.
alias_meta="identity.entity.aliases.$accessor.metadata"
agent_path="$kv_prefix/{{$alias_meta.service_account_namespace}}/{{$alias_meta.service_account_name}}"
{
  echo "# Written by deploy/vault/kubernetes-setup.sh: a sidecar reads its own agent's secrets, nothing else."
  echo "# Token self-lookup and renewal come from the built-in default policy."
  echo "path \"$kv_mount/data/$agent_path\" { capabilities = [$capabilities] }"
  echo "path \"$kv_mount/data/$agent_path/*\" { capabilities = [$capabilities] }"
  if [ -n "$kv1_mount" ]; then
    echo "path \"$kv1_mount/$agent_path\" { capabilities = [\"read\"] }"
    echo "path \"$kv1_mount/$agent_path/*\" { capabilities = [\"read\"] }"
  fi
} | "$cli" policy write "$policy" - >/dev/null

"$cli" write "auth/$mount/role/$role" \
  bound_service_account_names="$service_account" \
  bound_service_account_namespaces="$namespace" \
  audience="$audience" \
  alias_name_source=serviceaccount_uid \
  token_policies="$policy" \
  token_ttl="${TOKEN_TTL:-1h}" token_max_ttl="${TOKEN_MAX_TTL:-24h}" >/dev/null

echo "role $role ready on auth/$mount (audience $audience, namespaces $namespace, service accounts $service_account)"
echo "policy $policy: each service account reads $kv_mount/$kv_prefix/<namespace>/<service account>[/...]"
echo "keyward.yaml: secrets.vault.auth.kubernetes: { role: $role, mount: $mount, jwt_path: /var/run/secrets/keyward/vault/token }"
echo "  (the sidecar's projected $audience token; the Helm chart's configurations say so, with sidecar.vaultAudience: $audience)"
