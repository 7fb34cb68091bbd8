# A GitHub agent confined to one repository's issues and pull-request conversation: it may read issues and
# pull requests, open issues, and comment on issues and pull requests there. Nothing else, anywhere else.
package keyward

import rego.v1

repo := data.github.repository

prefix := concat("/", ["", "repos", repo])

default decision := {"allow": false, "reason": "this agent may only work on the issues and pull requests of its repository"}

path := input.request.path

in_repo if startswith(path, concat("", [prefix, "/"]))

reads_conversation if {
	input.request.method in {"GET", "HEAD"}
	in_repo
	regex.match(`^/(issues|pulls)(/[0-9]+(/comments)?)?/?$`, trim_prefix(path, prefix))
}

writes_conversation if {
	input.request.method == "POST"
	regex.match(`^/(issues|issues/[0-9]+/comments|pulls/[0-9]+/comments)/?$`, trim_prefix(path, prefix))
	in_repo
}

decision := {"allow": true, "reason": "reads the repository's issues or pull requests"} if reads_conversation

decision := {"allow": true, "reason": "writes an issue or a comment in the repository"} if writes_conversation
