# A static Vault (or OpenBao) policy for Keyward: read the KV secrets its credentials name, nothing else.
# approle-setup.sh installs it. Token self-lookup and self-renewal come from Vault's built-in `default` policy,
# attached to every token.
#
# Narrow the paths to the one agent this AppRole serves: `agents/*` lets the token read every agent's
# secrets. In Kubernetes do not use this file: kubernetes-setup.sh writes a templated policy that confines
# each sidecar to its own agent's path.

# KV v2 mounted at secret/: reads go to secret/data/<path> (reads of secret/data/<path>?version=N need the same).
path "secret/data/agents/*" {
  capabilities = ["read"]
}

# KV v1 mounted at kv1/ (only if you use `kv: 1` references).
path "kv1/agents/*" {
  capabilities = ["read"]
}
