package keyward_test

import rego.v1

at(weekday, number, hour) := {"time": {"weekday": weekday, "weekday_number": number, "hour": hour, "timezone": "UTC"}}

test_tuesday_morning_allowed if data.keyward.decision.allow with input as at("Tuesday", 2, 10)

test_before_opening_denied if not data.keyward.decision.allow with input as at("Tuesday", 2, 8)

test_closing_hour_denied if not data.keyward.decision.allow with input as at("Friday", 5, 18)

test_saturday_denied_with_reason if {
	d := data.keyward.decision with input as at("Saturday", 6, 11)
	not d.allow
	contains(d.reason, "Saturday")
}
