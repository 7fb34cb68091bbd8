# The Vault (or OpenBao) policy Keyward needs: read the KV secrets its credentials name, nothing else.
# Token self-lookup and self-renewal come from Vault's built-in `default` policy, attached to every token.
# Narrow the paths to the agents this sidecar serves.

# KV v2 mounted at secret/: reads go to secret/data/<path> (add secret/data/<path>?version=N needs the same).
path "secret/data/agents/*" {
  capabilities = ["read"]
}

# KV v1 mounted at kv1/ (only if you use `kv: 1` references).
path "kv1/agents/*" {
  capabilities = ["read"]
}
