# Read-only agent: it may look, never change. GET and HEAD pass; every other method is denied.
package keyward

import rego.v1

default decision := {"allow": false, "reason": "this agent is read-only: only GET and HEAD are allowed"}

decision := {"allow": true, "reason": "read-only call"} if input.request.method in {"GET", "HEAD"}
