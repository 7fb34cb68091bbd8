package keyward_test

import rego.v1

call(tool) := {"jsonrpc": {"method": "tools/call", "tool": tool, "arguments": {}}}

test_allowed_tool if data.keyward.decision.allow with input as call("search_docs")

test_other_tool_denied_with_reason if {
	d := data.keyward.decision with input as call("delete_repo")
	not d.allow
	contains(d.reason, "delete_repo")
}

test_list_allowed if data.keyward.decision.allow with input as {"jsonrpc": {"method": "tools/list"}}

test_notification_allowed if data.keyward.decision.allow with input as {"jsonrpc": {"method": "notifications/initialized"}}

test_not_jsonrpc_denied if not data.keyward.decision.allow with input as {"request": {"method": "POST"}}

test_batch_with_one_bad_call_denied if {
	not data.keyward.decision.allow with input as {"jsonrpc": {"batch": [
		{"method": "tools/call", "tool": "search_docs"},
		{"method": "tools/call", "tool": "drop_database"},
	]}}
}

test_good_batch_allowed if {
	data.keyward.decision.allow with input as {"jsonrpc": {"batch": [{"method": "tools/list"}, {"method": "tools/call", "tool": "get_ticket"}]}}
}
