package keyward_test

import rego.v1

opportunity(body) := {"request": {
	"method": "POST",
	"path": "/services/data/v60.0/sobjects/Opportunity",
	"body": body,
	"body_parsed": true,
}}

test_small_technology_deal_allowed if {
	data.keyward.decision.allow with input as opportunity({"Name": "Acme", "Amount": 25000, "Industry": "Technology"})
}

test_limit_is_inclusive if {
	data.keyward.decision.allow with input as opportunity({"Amount": 100000, "Industry": "Technology"})
}

test_big_deal_denied_with_amount_reason if {
	d := data.keyward.decision with input as opportunity({"Amount": 250000, "Industry": "Technology"})
	not d.allow
	contains(d.reason, "amount 250000 is over 100000")
}

test_other_industry_denied if {
	d := data.keyward.decision with input as opportunity({"Amount": 10, "Industry": "Retail"})
	not d.allow
	contains(d.reason, "industry Retail is not Technology")
}

test_reads_allowed if data.keyward.decision.allow with input as {"request": {"method": "GET", "path": "/services/data/v60.0/query"}}

test_delete_denied if {
	not data.keyward.decision.allow with input as {"request": {"method": "DELETE", "path": "/services/data/v60.0/sobjects/Opportunity/006x"}}
}
