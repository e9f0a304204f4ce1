"""The GitHub service end to end: main API creates instances, the service calls the simulator."""

from __future__ import annotations

import base64
import concurrent.futures
import time

import pytest

from tests.simulators.github import (
    BIG_SIZE,
    LOGO,
    PRIMARY_MESSAGE,
    SECONDARY_MESSAGE,
    rate_limit_headers,
    user_for,
)
from tests.support import call_tool as call
from tests.support import failed as err
from tests.support import http, ok

TOKEN = "ghp_alpha"


@pytest.fixture
def inst(admin):
    return admin.create_instance(service="github", credentials={"api_key": TOKEN})["instance_id"]


def assert_github_headers(req, token=TOKEN):
    assert req.header("Authorization") == f"Bearer {token}"
    assert req.header("Accept") == "application/vnd.github+json"
    assert req.header("X-GitHub-Api-Version") == "2022-11-28"
    assert req.header("User-Agent")


# Tools: exact upstream requests and shaped results ------------------------------------------------


def test_tools_are_listed_with_schemas(inst, github_service):
    tools = http("GET", f"{github_service.url}/{inst}/mcp/tools").json["tools"]
    by_name = {t["name"]: t for t in tools}
    assert set(by_name) == {"get_me", "search_repositories", "get_file_contents", "list_issues", "get_issue",
                            "create_issue", "add_issue_comment", "list_pull_requests", "get_pull_request",
                            "create_pull_request"}
    writes = {n for n, t in by_name.items() if not t["annotations"]["readOnlyHint"]}
    assert writes == {"create_issue", "add_issue_comment", "create_pull_request"}
    for tool in tools:
        assert tool["inputSchema"]["additionalProperties"] is False
        assert tool["outputSchema"]["type"] == "object"


def test_get_me_sends_the_token_and_api_headers(inst, github_service, github):
    result = ok(call(github_service, inst, "get_me"))
    assert result == user_for(TOKEN)
    [req] = github.recorded()
    assert (req.method, req.path, req.query) == ("GET", "/user", {})
    assert_github_headers(req)


def test_oauth_credentials_are_bearer_tokens_too(admin, github_service, github):
    inst = admin.create_instance(service="github", credentials={"access_token": "gho_oauth"})["instance_id"]
    assert ok(call(github_service, inst, "get_me"))["login"] == user_for("gho_oauth")["login"]
    [req] = github.recorded("/user")
    assert_github_headers(req, "gho_oauth")


def test_search_repositories(inst, github_service, github):
    result = ok(call(github_service, inst, "search_repositories",
                     {"query": "mcp language:python", "sort": "stars", "order": "desc", "page": 2,
                      "per_page": 20}))
    [req] = github.recorded()
    assert (req.method, req.path) == ("GET", "/search/repositories")
    assert req.query == {"q": "mcp language:python", "sort": "stars", "order": "desc", "page": "2",
                         "per_page": "20"}
    assert_github_headers(req)
    assert result["total_count"] == 45
    assert (result["page"], result["per_page"], result["has_more"], result["next_page"]) == (2, 20, True, 3)
    assert len(result["items"]) == 20
    assert result["items"][0] == {
        "full_name": "owner21/mcp-21", "description": "The mcp-21 repository",
        "html_url": "https://github.com/owner21/mcp-21", "private": False, "fork": False, "archived": False,
        "language": "Python", "topics": ["demo"], "stargazers_count": 42, "forks_count": 7,
        "open_issues_count": 12, "default_branch": "main", "updated_at": "2026-11-01T00:00:00Z",
        "pushed_at": "2026-11-02T00:00:00Z", "owner": "owner21"}
    last = ok(call(github_service, inst, "search_repositories", {"query": "mcp", "page": 3, "per_page": 20}))
    assert (len(last["items"]), last["has_more"], last["next_page"]) == (5, False, None)


def test_search_beyond_the_first_1000_results_is_refused_before_any_request(inst, github_service, github):
    result = err(call(github_service, inst, "search_repositories", {"query": "x", "page": 11, "per_page": 100}))
    assert result["code"] == "invalid_arguments" and result["field"] == "page"
    assert github.recorded() == []


def test_get_file_contents_decodes_a_text_file_at_a_ref(inst, github_service, github):
    result = ok(call(github_service, inst, "get_file_contents",
                     {"owner": "octo", "repo": "demo", "path": "README.md", "ref": "v1.2"}))
    [req] = github.recorded()
    assert (req.method, req.path, req.query) == ("GET", "/repos/octo/demo/contents/README.md", {"ref": "v1.2"})
    assert_github_headers(req)
    assert result["type"] == "file" and result["encoding"] == "utf-8"
    assert result["content"] == "# demo\n\nref: v1.2\n"
    assert result["path"] == "README.md" and result["size"] == len(result["content"])
    assert result["download_url"] == "https://raw.githubusercontent.com/octo/demo/v1.2/README.md"


def test_get_file_contents_quotes_odd_file_names(inst, github_service, github):
    result = ok(call(github_service, inst, "get_file_contents",
                     {"owner": "octo", "repo": "demo", "path": "docs/c#/a b?.md"}))
    assert result["content"] == "# Odd name\n"
    [req] = github.recorded()
    assert req.path == "/repos/octo/demo/contents/docs/c#/a b?.md" and req.query == {}


def test_get_file_contents_lists_directories(inst, github_service, github):
    root = ok(call(github_service, inst, "get_file_contents", {"owner": "octo", "repo": "demo"}))
    [req] = github.recorded()
    assert req.path == "/repos/octo/demo/contents"
    assert root["type"] == "dir" and root["path"] == ""
    assert {(e["type"], e["path"]) for e in root["entries"]} == {
        ("file", "README.md"), ("file", "logo.png"), ("file", "big.bin"), ("dir", "src"), ("dir", "docs")}
    src = ok(call(github_service, inst, "get_file_contents", {"owner": "octo", "repo": "demo", "path": "src"}))
    assert [e["name"] for e in src["entries"]] == ["app.py"]
    assert set(src["entries"][0]) == {"type", "name", "path", "size", "sha", "html_url", "download_url"}


def test_get_file_contents_binary_and_too_large_files(inst, github_service, github):
    logo = ok(call(github_service, inst, "get_file_contents", {"owner": "octo", "repo": "demo", "path": "logo.png"}))
    assert logo["encoding"] == "base64" and base64.b64decode(logo["content"]) == LOGO
    big = ok(call(github_service, inst, "get_file_contents", {"owner": "octo", "repo": "demo", "path": "big.bin"}))
    assert big["content"] is None and big["size"] == BIG_SIZE
    assert "download_url" in big["note"] and big["download_url"].endswith("/big.bin")


def test_list_issues_follows_link_pages_and_drops_pull_requests(inst, github_service, github):
    result = ok(call(github_service, inst, "list_issues",
                     {"owner": "octo", "repo": "demo", "state": "all", "per_page": 30, "max_items": 1000}))
    reqs = github.recorded()
    assert [r.method for r in reqs] == ["GET"] * 3
    assert reqs[0].path == "/repos/octo/demo/issues"
    assert reqs[0].query == {"state": "all", "per_page": "30", "page": "1"}
    repo_id = github.repo_id("octo", "demo")
    # Next pages are GitHub's Link URLs, which name the repository by id.
    assert [(r.path, r.query) for r in reqs[1:]] == [
        (f"/repositories/{repo_id}/issues", {"state": "all", "per_page": "30", "page": "2"}),
        (f"/repositories/{repo_id}/issues", {"state": "all", "per_page": "30", "page": "3"})]
    for r in reqs:
        assert_github_headers(r)
    numbers = [i["number"] for i in result["issues"]]
    assert numbers == [n for n in range(75, 0, -1) if n % 4]
    assert (result["count"], result["has_more"], result["next_page"], result["pages_fetched"]) == (57, False, None, 3)
    assert result["issues"][-1] == {
        "number": 1, "title": "Issue 1", "state": "open", "state_reason": None, "comments": 1,
        "created_at": "2026-01-01T01:00:00Z", "updated_at": "2026-02-01T01:00:00Z", "closed_at": None,
        "html_url": "https://github.com/octo/demo/issues/1", "body": "Body of issue 1", "user": "octocat",
        "labels": [], "assignees": ["hubot"]}


def test_list_issues_stops_at_max_items_and_says_where_to_resume(inst, github_service, github):
    result = ok(call(github_service, inst, "list_issues", {"owner": "octo", "repo": "demo", "state": "all",
                                                          "per_page": 10, "max_items": 12}))
    assert [i["number"] for i in result["issues"]] == [75, 74, 73, 71, 70, 69, 67, 66, 65, 63, 62, 61]
    # Page 1 (75..66) holds 8 issues, page 2 (65..56) 7 more: 4 of them returned.
    assert (result["has_more"], result["next_page"], result["next_page_skip"]) == (True, 2, 4)
    assert len(github.recorded()) == 2
    github.reset()
    rest = ok(call(github_service, inst, "list_issues", {"owner": "octo", "repo": "demo", "state": "all",
                                                        "per_page": 10, "page": 2, "max_items": 8}))
    assert [i["number"] for i in rest["issues"]] == [65, 63, 62, 61, 59, 58, 57, 55]
    assert [r.query["page"] for r in github.recorded()] == ["2", "3"]
    assert (rest["has_more"], rest["next_page"], rest["next_page_skip"]) == (True, 3, 1)


def test_list_issues_filters_by_labels_and_state(inst, github_service, github):
    result = ok(call(github_service, inst, "list_issues", {"owner": "octo", "repo": "demo", "labels": ["bug", "docs"],
                                                          "sort": "updated", "direction": "desc",
                                                          "since": "2026-01-01T00:00:00Z"}))
    [req] = github.recorded()
    assert req.query == {"state": "open", "labels": "bug,docs", "sort": "updated", "direction": "desc",
                         "since": "2026-01-01T00:00:00Z", "per_page": "30", "page": "1"}
    assert [i["number"] for i in result["issues"]] == [63, 42, 21]
    assert result["issues"][0]["labels"] == ["bug", "docs"]


def test_get_issue(inst, github_service, github):
    result = ok(call(github_service, inst, "get_issue", {"owner": "octo", "repo": "demo", "issue_number": 1}))
    [req] = github.recorded()
    assert (req.method, req.path) == ("GET", "/repos/octo/demo/issues/1")
    assert_github_headers(req)
    assert result["number"] == 1 and result["milestone"] == "v1.0" and result["is_pull_request"] is False
    assert result["author_association"] == "OWNER" and result["assignees"] == ["hubot"]
    pr = ok(call(github_service, inst, "get_issue", {"owner": "octo", "repo": "demo", "issue_number": 4}))
    assert pr["is_pull_request"] is True


def test_create_issue(inst, github_service, github):
    args = {"owner": "octo", "repo": "demo", "title": "Crash on start", "body": "Steps:\n1. run",
            "labels": ["bug"], "assignees": ["hubot"]}
    result = ok(call(github_service, inst, "create_issue", args))
    [req] = github.recorded()
    assert (req.method, req.path) == ("POST", "/repos/octo/demo/issues")
    assert req.body == {"title": "Crash on start", "body": "Steps:\n1. run", "labels": ["bug"],
                        "assignees": ["hubot"]}
    assert req.header("Content-Type").startswith("application/json")
    assert_github_headers(req)
    assert (result["number"], result["title"], result["state"]) == (76, "Crash on start", "open")
    assert (result["labels"], result["assignees"]) == (["bug"], ["hubot"])
    assert result["user"] == user_for(TOKEN)["login"]
    assert result["html_url"] == "https://github.com/octo/demo/issues/76"


def test_create_issue_validation_failure_shows_githubs_errors(inst, github_service, github):
    result = err(call(github_service, inst, "create_issue", {"owner": "octo", "repo": "demo", "title": "   "}))
    assert github.recorded()[0].body == {"title": "   "}
    assert (result["upstream"], result["status"], result["code"]) == ("github", 422, "validation_failed")
    assert result["errors"] == [{"resource": "Issue", "code": "missing_field", "field": "title"}]
    assert "Issue.title missing_field" in result["message"]


def test_add_issue_comment(inst, github_service, github):
    result = ok(call(github_service, inst, "add_issue_comment",
                     {"owner": "octo", "repo": "demo", "issue_number": 3, "body": "Looking into it"}))
    [req] = github.recorded()
    assert (req.method, req.path, req.body) == ("POST", "/repos/octo/demo/issues/3/comments",
                                                {"body": "Looking into it"})
    assert_github_headers(req)
    assert result == {"id": 7000, "html_url": "https://github.com/octo/demo/issues/3#issuecomment-7000",
                      "user": user_for(TOKEN)["login"], "created_at": "2026-11-25T12:00:00Z",
                      "body": "Looking into it"}


def test_list_pull_requests(inst, github_service, github):
    result = ok(call(github_service, inst, "list_pull_requests",
                     {"owner": "octo", "repo": "demo", "state": "all", "base": "main", "sort": "created",
                      "direction": "desc", "per_page": 5}))
    reqs = github.recorded()
    assert reqs[0].path == "/repos/octo/demo/pulls"
    assert reqs[0].query == {"state": "all", "base": "main", "sort": "created", "direction": "desc",
                             "per_page": "5", "page": "1"}
    assert reqs[1].path == f"/repositories/{github.repo_id('octo', 'demo')}/pulls"
    assert [p["number"] for p in result["pull_requests"]] == [n for n in range(72, 0, -4) if n % 3]
    assert (result["count"], result["has_more"], result["pages_fetched"]) == (12, False, 3)
    first = result["pull_requests"][0]
    assert first["head"] == {"label": "octocat:feature-68", "ref": "feature-68", "sha": f"{68:040x}",
                             "repo": "octo/demo"}
    assert first["base"]["ref"] == "main" and first["draft"] is False
    head = ok(call(github_service, inst, "list_pull_requests",
                   {"owner": "octo", "repo": "demo", "head": "octocat:feature-8"}))
    assert github.recorded()[-1].query["head"] == "octocat:feature-8"
    assert [p["number"] for p in head["pull_requests"]] == [8]


def test_get_pull_request_combines_the_pull_and_all_its_files(inst, github_service, github):
    result = ok(call(github_service, inst, "get_pull_request", {"owner": "octo", "repo": "demo", "pull_number": 8}))
    pull_reqs = github.recorded(r"/pulls/8$")
    assert [(r.method, r.path) for r in pull_reqs] == [("GET", "/repos/octo/demo/pulls/8")]
    file_reqs = github.recorded(r"/pulls/8/files$")
    assert file_reqs[0].path == "/repos/octo/demo/pulls/8/files"
    assert file_reqs[0].query == {"per_page": "100", "page": "1"}
    assert [r.query["page"] for r in file_reqs] == ["1", "2", "3"]
    for r in pull_reqs + file_reqs:
        assert_github_headers(r)
    assert (result["number"], result["mergeable"], result["changed_files"]) == (8, True, 250)
    assert result["draft"] is True and result["requested_reviewers"] == ["hubot"]
    assert len(result["files"]) == 250 and result["files_truncated"] is False
    assert result["files"][1] == {"filename": "src/file1.py", "status": "modified", "additions": 2, "deletions": 1,
                                  "changes": 3, "blob_url": f"https://github.com/octo/demo/blob/{8:040x}/src/file1.py",
                                  "patch": "@@ -1 +1,2 @@\n-old 1\n+new 1\n+more 1"}


def test_create_pull_request(inst, github_service, github):
    result = ok(call(github_service, inst, "create_pull_request",
                     {"owner": "octo", "repo": "demo", "title": "Add feature", "head": "octocat:feature-x",
                      "base": "main", "body": "Closes #1", "draft": True}))
    [req] = github.recorded()
    assert (req.method, req.path) == ("POST", "/repos/octo/demo/pulls")
    assert req.body == {"title": "Add feature", "head": "octocat:feature-x", "base": "main", "body": "Closes #1",
                        "draft": True}
    assert_github_headers(req)
    assert (result["number"], result["title"], result["draft"], result["state"]) == (100, "Add feature", True, "open")
    assert result["head"]["label"] == "octocat:feature-x" and result["base"]["ref"] == "main"


def test_create_pull_request_custom_validation_error(inst, github_service, github):
    result = err(call(github_service, inst, "create_pull_request",
                      {"owner": "octo", "repo": "demo", "title": "Again", "head": "existing", "base": "main"}))
    assert (result["status"], result["code"]) == (422, "validation_failed")
    assert "A pull request already exists for octo:existing." in result["message"]


# Upstream errors ------------------------------------------------------------------------------------


def test_bad_token_is_unauthorized(admin, github_service, github):
    inst = admin.create_instance(service="github", credentials={"api_key": "bad_token"})["instance_id"]
    result = err(call(github_service, inst, "get_me"))
    assert (result["upstream"], result["status"], result["code"]) == ("github", 401, "unauthorized")
    assert "replace this instance's credentials" in result["message"] and "Bad credentials" in result["message"]
    assert "bad_token" not in result["message"]


def test_missing_repository_is_not_found(inst, github_service, github):
    result = err(call(github_service, inst, "get_issue", {"owner": "nobody", "repo": "missing", "issue_number": 1}))
    assert (result["status"], result["code"], result["retry_after_s"]) == (404, "not_found", None)
    assert "private" in result["message"]


def test_forbidden_includes_githubs_message(inst, github_service, github):
    github.fail(r"/issues$", 403, {"message": "Resource not accessible by personal access token",
                                   "documentation_url": "https://docs.github.com/rest/issues/issues", "status": "403"},
                headers=rate_limit_headers(remaining=4000))
    result = err(call(github_service, inst, "create_issue", {"owner": "octo", "repo": "demo", "title": "t"}))
    assert (result["status"], result["code"]) == (403, "forbidden")
    assert "Resource not accessible by personal access token" in result["message"]


def test_primary_rate_limit_says_when_it_resets(inst, github_service, github):
    reset = int(time.time()) + 120
    github.fail("/user", 403, {"message": PRIMARY_MESSAGE, "documentation_url": "https://docs.github.com/rest"},
                headers=rate_limit_headers(remaining=0, reset=reset))
    result = err(call(github_service, inst, "get_me"))
    assert (result["status"], result["code"], result["limit"]) == (403, "rate_limited", "primary")
    assert 100 <= result["retry_after_s"] <= 120
    assert result["rate_limit"] == {"limit": 5000, "remaining": 0, "used": 5000, "reset": reset, "resource": "core"}
    assert "API rate limit exceeded for user ID 1." in result["message"]


def test_secondary_rate_limit_uses_retry_after(inst, github_service, github):
    github.fail("/search/", 429, {"message": SECONDARY_MESSAGE, "documentation_url": "https://docs.github.com/rest"},
                headers={**rate_limit_headers(remaining=25, limit=30, resource="search"), "retry-after": "42"})
    result = err(call(github_service, inst, "search_repositories", {"query": "x"}))
    assert (result["status"], result["code"], result["limit"], result["retry_after_s"]) == (
        429, "rate_limited", "secondary", 42)
    assert "secondary rate limit" in result["message"]


def test_secondary_rate_limit_without_headers_waits_a_minute(inst, github_service, github):
    github.fail("/user", 403, {"message": SECONDARY_MESSAGE, "documentation_url": "https://docs.github.com/rest"})
    result = err(call(github_service, inst, "get_me"))
    assert (result["code"], result["limit"], result["retry_after_s"]) == ("rate_limited", "secondary", 60)


def test_server_errors_are_reported_as_unavailable(inst, github_service, github):
    github.fail("/user", 502, "<html>Bad gateway</html>")
    result = err(call(github_service, inst, "get_me"))
    assert (result["status"], result["code"]) == (502, "upstream_unavailable")


def test_next_links_to_another_host_are_not_followed(inst, github_service, github):
    github.fail(r"/issues$", 200, [{"number": 1, "title": "x", "state": "open"}],
                headers={"Link": '<https://evil.example/issues?page=2>; rel="next"'})
    result = err(call(github_service, inst, "list_issues", {"owner": "octo", "repo": "demo"}))
    assert result["code"] == "bad_response" and "another host" in result["message"]
    assert len(github.recorded()) == 1


# Direct endpoint ------------------------------------------------------------------------------------


def test_direct_repository_endpoint(inst, github_service, github):
    resp = http("GET", f"{github_service.url}/{inst}/api/repos/octo/demo")
    assert resp.status == 200
    assert resp.json == github.repo_json("octo", "demo")
    [req] = github.recorded()
    assert (req.method, req.path) == ("GET", "/repos/octo/demo")
    assert_github_headers(req)


def test_direct_repository_endpoint_not_found(inst, github_service, github):
    resp = http("GET", f"{github_service.url}/{inst}/api/repos/nobody/missing")
    assert resp.status == 404
    assert resp.json["error"]["code"] == "upstream_not_found"
    assert resp.json["error"]["upstream"]["status"] == 404


def test_direct_repository_endpoint_rate_limited_is_429(inst, github_service, github):
    github.fail("/repos/", 403, {"message": PRIMARY_MESSAGE}, headers=rate_limit_headers(remaining=0))
    resp = http("GET", f"{github_service.url}/{inst}/api/repos/octo/demo")
    assert resp.status == 429 and int(resp.headers["retry-after"]) > 0


def test_direct_repository_endpoint_bad_request(inst, github_service, github):
    # One service for all cases: starting one per case would dominate the run time.
    for path, field in [("api/repos/-bad/demo", "owner"), ("api/repos/octo/..", "repo"),
                        ("api/repos/octo/a%3Fb", "repo"), ("api/repos/octo/demo?ref=x", "ref")]:
        resp = http("GET", f"{github_service.url}/{inst}/{path}")
        assert resp.status == 400, (path, resp.body)
        assert resp.json["error"]["field"] == field, path
    assert github.recorded() == []


# Argument validation --------------------------------------------------------------------------------


BAD_ARGUMENTS = [
    ("get_issue", {"owner": "octo/evil", "repo": "demo", "issue_number": 1}, "owner"),
    ("get_issue", {"owner": "octo", "repo": "..", "issue_number": 1}, "repo"),
    ("get_issue", {"owner": "octo", "repo": "demo?x=1", "issue_number": 1}, "repo"),
    ("get_issue", {"owner": "octo", "repo": "demo", "issue_number": 0}, "issue_number"),
    ("get_file_contents", {"owner": "octo", "repo": "demo", "path": "../../user"}, "path"),
    ("get_file_contents", {"owner": "octo", "repo": "demo", "path": "src/./app.py"}, "path"),
    ("get_file_contents", {"owner": "octo", "repo": "demo", "path": "/etc/passwd"}, "path"),
    ("list_issues", {"owner": "octo", "repo": "demo", "per_page": 101}, "per_page"),
    ("list_issues", {"owner": "octo", "repo": "demo", "max_items": 1001}, "max_items"),
    ("list_issues", {"owner": "octo", "repo": "demo", "state": "merged"}, "state"),
    ("list_issues", {"owner": "octo", "repo": "demo", "labels": ["a,b"]}, "labels[0]"),
    ("create_issue", {"owner": "octo", "repo": "demo"}, "title"),
    ("create_issue", {"owner": "octo", "repo": "demo", "title": "t", "milestone": 1}, "milestone"),
    ("add_issue_comment", {"owner": "octo", "repo": "demo", "issue_number": 1, "body": ""}, "body"),
    ("create_pull_request", {"owner": "octo", "repo": "demo", "title": "t", "head": "a b", "base": "main"}, "head"),
    ("search_repositories", {"query": "x" * 257}, "query"),
]


def test_bad_arguments_never_reach_github(inst, github_service, github):
    for tool, args, field in BAD_ARGUMENTS:
        result = err(call(github_service, inst, tool, args))
        assert result["code"] == "invalid_arguments" and result["field"] == field, (tool, args, result)
        assert field.split("[")[0] in result["message"]
    assert github.recorded() == []


# Isolation ------------------------------------------------------------------------------------------


def test_concurrent_calls_of_two_instances_never_cross_tokens(admin, github_service, github):
    a = admin.create_instance(service="github", user="a@example.com", credentials={"api_key": "ghp_token_a"})
    b = admin.create_instance(service="github", user="b@example.com", credentials={"access_token": "gho_token_b"})
    github.delay = 0.01
    jobs = [(a["instance_id"], "ghp_token_a"), (b["instance_id"], "gho_token_b")] * 40
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda j: (j[1], call(github_service, j[0], "get_me")), jobs))
    for token, result in results:
        assert ok(result)["login"] == user_for(token)["login"]
    recorded = github.recorded("/user")
    assert len(recorded) == 80
    assert {r.header("Authorization") for r in recorded} == {"Bearer ghp_token_a", "Bearer gho_token_b"}
