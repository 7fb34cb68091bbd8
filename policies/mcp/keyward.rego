# MCP tool allowlist: an MCP server over HTTP (JSON-RPC) may be initialised and listed freely, but
# `tools/call` is allowed only for the tools in data.json. Batches pass only if every call in them would.
package keyward

import rego.v1

allowed_tools := {t | some t in data.mcp.allowed_tools}

always_allowed := {"initialize", "ping", "tools/list", "resources/list", "prompts/list"}

default decision := {"allow": false, "reason": "only MCP JSON-RPC requests are allowed on this route", "code": "not_mcp"}

call_ok(call) if call.method in always_allowed

call_ok(call) if startswith(call.method, "notifications/")

call_ok(call) if {
	call.method == "tools/call"
	call.tool in allowed_tools
}

decision := {"allow": true, "reason": "allowed MCP call"} if {
	not input.jsonrpc.batch
	call_ok(input.jsonrpc)
}

# `code` labels the denial metric; the reason quotes the agent's tool name and stays out of metric labels.
decision := {"allow": false, "reason": sprintf("tool %v is not on this agent's allowlist", [input.jsonrpc.tool]), "code": "tool_not_allowed"} if {
	input.jsonrpc.method == "tools/call"
	not call_ok(input.jsonrpc)
}

decision := {"allow": true, "reason": "allowed MCP batch"} if {
	count(input.jsonrpc.batch) > 0
	every call in input.jsonrpc.batch {
		call_ok(call)
	}
}
