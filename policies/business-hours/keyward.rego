# Business hours only: calls are allowed on the configured days and hours (data.json), evaluated in the time
# zone set by `policy.timezone`. Outside them the agent is denied and told when it may try again.
package keyward

import rego.v1

hours := data.business_hours

default decision := {"allow": false, "reason": "outside business hours"}

open if {
	input.time.weekday_number in hours.days
	input.time.hour >= hours.start_hour
	input.time.hour < hours.end_hour
}

decision := {"allow": true, "reason": "within business hours"} if open

decision := {"allow": false, "reason": reason} if {
	not open
	reason := sprintf("outside business hours (%v, %02d:00 in %v; open %02d:00-%02d:00 on days %v)", [
		input.time.weekday, input.time.hour, input.time.timezone, hours.start_hour, hours.end_hour, hours.days,
	])
}
