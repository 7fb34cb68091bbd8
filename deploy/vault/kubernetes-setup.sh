#!/usr/bin/env bash
# Sets up Kubernetes auth for Keyward sidecars on Vault or OpenBao, run from a machine that can reach both
# Vault and the cluster. Pods authenticate with their projected service-account token; Vault verifies it with
# the cluster's TokenReview API.
#   NAMESPACE / SERVICE_ACCOUNT: where the agent pods (and their Keyward sidecars) run.
set -euo pipefail
cli=${VAULT_CLI:-bao}
here=$(dirname "$0")
namespace=${NAMESPACE:-agents}
service_account=${SERVICE_ACCOUNT:-keyward}

"$cli" policy write keyward "$here/keyward-policy.hcl"
"$cli" auth enable kubernetes 2>/dev/null || true
# When Vault runs in the cluster it can use its own service account for TokenReview; otherwise give it the
# API address, the cluster CA and a reviewer token (a service account bound to system:auth-delegator).
"$cli" write auth/kubernetes/config \
  kubernetes_host="${KUBERNETES_HOST:-https://kubernetes.default.svc}" \
  ${KUBERNETES_CA_FILE:+kubernetes_ca_cert=@"$KUBERNETES_CA_FILE"} \
  ${REVIEWER_JWT:+token_reviewer_jwt="$REVIEWER_JWT"}
"$cli" write auth/kubernetes/role/keyward \
  bound_service_account_names="$service_account" \
  bound_service_account_namespaces="$namespace" \
  token_policies=keyward token_ttl=1h token_max_ttl=24h
echo "role keyward ready: secrets.vault.auth.kubernetes.role: keyward"
