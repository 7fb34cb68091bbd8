package keyward_test

import rego.v1

req(method, path) := {"request": {"method": method, "path": path}}

test_list_issues_allowed if data.keyward.decision.allow with input as req("GET", "/repos/acme/agent-sandbox/issues")

test_read_pr_comments_allowed if data.keyward.decision.allow with input as req("GET", "/repos/acme/agent-sandbox/pulls/7/comments")

test_comment_on_issue_allowed if data.keyward.decision.allow with input as req("POST", "/repos/acme/agent-sandbox/issues/12/comments")

test_open_issue_allowed if data.keyward.decision.allow with input as req("POST", "/repos/acme/agent-sandbox/issues")

test_other_repo_denied if not data.keyward.decision.allow with input as req("GET", "/repos/acme/payroll/issues")

test_lookalike_repo_denied if not data.keyward.decision.allow with input as req("GET", "/repos/acme/agent-sandbox-evil/issues")

test_merge_denied if not data.keyward.decision.allow with input as req("PUT", "/repos/acme/agent-sandbox/pulls/7/merge")

test_contents_denied if not data.keyward.decision.allow with input as req("GET", "/repos/acme/agent-sandbox/contents/.env")
