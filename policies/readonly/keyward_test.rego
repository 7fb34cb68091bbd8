package keyward_test

import rego.v1

test_get_allowed if data.keyward.decision.allow with input as {"request": {"method": "GET"}}

test_head_allowed if data.keyward.decision.allow with input as {"request": {"method": "HEAD"}}

test_post_denied if not data.keyward.decision.allow with input as {"request": {"method": "POST"}}

test_delete_denied_with_reason if {
	d := data.keyward.decision with input as {"request": {"method": "DELETE"}}
	not d.allow
	contains(d.reason, "read-only")
}
