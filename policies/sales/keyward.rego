# The sales agent from our users' seed article: it may read CRM records, and create an opportunity only when
# the deal is in the Technology industry and worth at most 100000. Anything else is denied with a reason.
package keyward

import rego.v1

default decision := {"allow": false, "reason": "the sales agent may only read records and create opportunities"}

max_amount := 100000

reads if input.request.method in {"GET", "HEAD"}

creates_opportunity if {
	input.request.method == "POST"
	regex.match(`^/services/data/v[0-9.]+/sobjects/Opportunity/?$`, input.request.path)
}

opportunity := input.request.body

within_limits if {
	opportunity.Industry == "Technology"
	is_number(opportunity.Amount)
	opportunity.Amount <= max_amount
}

decision := {"allow": true, "reason": "read-only call"} if reads

decision := {"allow": true, "reason": "opportunity within limits"} if {
	creates_opportunity
	within_limits
}

decision := {"allow": false, "reason": refusal, "code": "opportunity_over_limits"} if {
	creates_opportunity
	not within_limits
	refusal := concat("; ", refusals)
}

refusals contains "the request body was not parsed (not JSON, or over policy.body_limit)" if not input.request.body_parsed

refusals contains sprintf("amount %v is over %v", [opportunity.Amount, max_amount]) if opportunity.Amount > max_amount

refusals contains "amount is missing or not a number" if not is_number(opportunity.Amount)

refusals contains sprintf("industry %v is not Technology", [opportunity.Industry]) if {
	opportunity.Industry != "Technology"
}

refusals contains "industry is missing" if not opportunity.Industry
