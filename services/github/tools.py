"""GitHub's MCP tools: what an AI client sees, and how each maps onto the GitHub REST API."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from mcp.errors import ToolError
from mcp.protocol.schemas import object_schema, output_schema
from mcp.protocol.tools import Tool
from services.github.api import GitHubClient

# GitHub logins: letters, digits and hyphens; '_' appears in Enterprise Managed User handles.
OWNER = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$",
         "description": "The account (user or organisation) that owns the repository, e.g. \"octocat\""}
REPO = {"type": "string", "pattern": r"^(?!\.\.?$)[A-Za-z0-9._-]{1,100}$",
        "description": "The repository name without the owner, e.g. \"hello-world\""}
NUMBER = {"type": "integer", "minimum": 1, "maximum": 2147483647}
# A path inside the repository: no leading, trailing or doubled '/', no '.' or '..' segments
# (URL normalisation would turn those into another endpoint), no control characters or '\'.
FILE_PATH = {"type": "string", "maxLength": 1024,
             "pattern": r"^(?!/)(?!.*//)(?!.*/$)(?!(?:.*/)?\.{1,2}(?:/|$))[^\x00-\x1f\x7f\\]*$",
             "description": "Path of a file or directory inside the repository, e.g. \"src/app.py\"; "
                            "\"\" or omitted for the root directory"}
REF = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^\x00-\x20~^:?*\[\\]+$",
       "description": "A branch, tag or commit SHA; default: the repository's default branch"}
BRANCH = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^\x00-\x20~^?*\[\\]+$"}
PER_PAGE = {"type": "integer", "minimum": 1, "maximum": 100, "description": "Items per upstream page (default 30)"}
PAGE = {"type": "integer", "minimum": 1, "maximum": 10000, "description": "Page to start from (default 1)"}
MAX_ITEMS = {"type": "integer", "minimum": 1, "maximum": 1000,
             "description": "Stop after this many items, following next-page links (default 100)"}
LOGIN = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"}
STATE = {"type": "string", "enum": ["open", "closed", "all"], "description": "Default open"}
DIRECTION = {"type": "string", "enum": ["asc", "desc"], "description": "Default desc"}
PAGE_FIELDS = {"count": {"type": "integer"}, "has_more": {"type": "boolean"},
               "next_page": {"type": ["integer", "null"]}, "next_page_skip": {"type": "integer"},
               "pages_fetched": {"type": "integer"}}

DEFAULT_PER_PAGE = 30
DEFAULT_MAX_ITEMS = 100
# Search returns at most the first 1000 results, whatever the page.
SEARCH_RESULT_CAP = 1000
PR_FILES_CAP = 300
PATCH_CAP = 20000


def _login(user: Any) -> str | None:
    return user.get("login") if isinstance(user, dict) else None


def _max_pages(max_items: int, per_page: int) -> int:
    # Room for pages that are mostly filtered out (pull requests in the issues list), but bounded.
    return min(50, -(-max_items // per_page) + 5)


def shape_repo(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in ("full_name", "description", "html_url", "private", "fork", "archived",
                                  "language", "topics", "stargazers_count", "forks_count",
                                  "open_issues_count", "default_branch", "updated_at", "pushed_at")} | {
        "owner": _login(r.get("owner"))}


def shape_issue(i: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {k: i.get(k) for k in ("number", "title", "state", "state_reason", "comments",
                                                 "created_at", "updated_at", "closed_at", "html_url", "body")}
    out["user"] = _login(i.get("user"))
    out["labels"] = [lb.get("name") if isinstance(lb, dict) else lb for lb in i.get("labels") or []]
    out["assignees"] = [_login(a) for a in i.get("assignees") or []]
    if full:
        milestone = i.get("milestone")
        out.update({"locked": i.get("locked"), "author_association": i.get("author_association"),
                    "milestone": milestone.get("title") if isinstance(milestone, dict) else None,
                    "is_pull_request": "pull_request" in i, "closed_by": _login(i.get("closed_by"))})
    return out


def _ref(r: Any) -> dict[str, Any] | None:
    if not isinstance(r, dict):
        return None
    repo = r.get("repo")
    return {"label": r.get("label"), "ref": r.get("ref"), "sha": r.get("sha"),
            "repo": repo.get("full_name") if isinstance(repo, dict) else None}


def shape_pull(p: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {k: p.get(k) for k in ("number", "title", "state", "draft", "created_at", "updated_at",
                                                 "closed_at", "merged_at", "html_url", "body")}
    out["user"] = _login(p.get("user"))
    out["head"] = _ref(p.get("head"))
    out["base"] = _ref(p.get("base"))
    out["labels"] = [lb.get("name") if isinstance(lb, dict) else lb for lb in p.get("labels") or []]
    if full:
        out.update({k: p.get(k) for k in ("merged", "mergeable", "mergeable_state", "comments",
                                          "review_comments", "commits", "additions", "deletions",
                                          "changed_files")})
        out["merged_by"] = _login(p.get("merged_by"))
        out["requested_reviewers"] = [_login(u) for u in p.get("requested_reviewers") or []]
    return out


def shape_file(f: dict[str, Any]) -> dict[str, Any]:
    out = {k: f.get(k) for k in ("filename", "status", "additions", "deletions", "changes", "blob_url")}
    if f.get("previous_filename"):
        out["previous_filename"] = f["previous_filename"]
    # Binary and very large diffs have no patch at all.
    patch = f.get("patch")
    if isinstance(patch, str) and len(patch) > PATCH_CAP:
        out["patch"], out["patch_truncated"] = patch[:PATCH_CAP], True
    else:
        out["patch"] = patch
    return out


def _entry(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e.get(k) for k in ("type", "name", "path", "size", "sha", "html_url", "download_url")}


def shape_contents(data: Any) -> dict[str, Any]:
    """A file's text (decoded from base64), or a directory listing as a list of entries."""
    if isinstance(data, list):
        return {"type": "dir", "entries": [_entry(e) for e in data if isinstance(e, dict)]}
    if not isinstance(data, dict):
        raise ToolError("GitHub answered the contents request with an unexpected shape", code="bad_response")
    kind = data.get("type")
    out = _entry(data)
    if kind == "symlink":
        out["target"] = data.get("target")
        return out
    if kind == "submodule":
        out["submodule_git_url"] = data.get("submodule_git_url")
        return out
    if kind != "file":
        return out
    raw = data.get("content") or ""
    if data.get("encoding") != "base64" or (not raw and (data.get("size") or 0) > 0):
        # Files over 1 MB come back with encoding "none" and no content.
        out.update(encoding=None, content=None,
                   note="the file is too large for the contents API; fetch download_url instead")
        return out
    try:
        blob = base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError):
        raise ToolError("GitHub sent file content that is not valid base64", code="bad_response") from None
    try:
        out.update(encoding="utf-8", content=blob.decode("utf-8"))
    except UnicodeDecodeError:
        out.update(encoding="base64", content=base64.b64encode(blob).decode("ascii"),
                   note="binary file: content is base64")
    return out


# Handlers -----------------------------------------------------------------------------------------


async def get_me(gh: GitHubClient, args: dict[str, Any]) -> Any:
    return await gh.me()


async def search_repositories(gh: GitHubClient, args: dict[str, Any]) -> Any:
    page = args.get("page", 1)
    per_page = args.get("per_page", DEFAULT_PER_PAGE)
    if (page - 1) * per_page >= SEARCH_RESULT_CAP:
        raise ToolError(f"GitHub search only returns the first {SEARCH_RESULT_CAP} results: page {page} with "
                        f"per_page {per_page} starts beyond them; narrow the query instead",
                        code="invalid_arguments", details={"field": "page"})
    data, more = await gh.search_repositories(args["query"], page=page, per_page=per_page,
                                              sort=args.get("sort"), order=args.get("order"))
    items = [shape_repo(r) for r in data.get("items") or [] if isinstance(r, dict)]
    return {"total_count": data.get("total_count"), "incomplete_results": data.get("incomplete_results"),
            "page": page, "per_page": per_page, "has_more": more, "next_page": page + 1 if more else None,
            "items": items}


async def get_file_contents(gh: GitHubClient, args: dict[str, Any]) -> Any:
    data = await gh.contents(args["owner"], args["repo"], args.get("path", ""), args.get("ref"))
    out = shape_contents(data)
    if out.get("type") == "dir":
        out["path"] = args.get("path", "")
    return out


async def list_issues(gh: GitHubClient, args: dict[str, Any]) -> Any:
    per_page = args.get("per_page", DEFAULT_PER_PAGE)
    max_items = args.get("max_items", DEFAULT_MAX_ITEMS)
    params = {"state": args.get("state", "open"),
              "labels": ",".join(args["labels"]) if args.get("labels") else None,
              "sort": args.get("sort"), "direction": args.get("direction"), "since": args.get("since"),
              "per_page": per_page, "page": args.get("page", 1)}
    page = await gh.issues(args["owner"], args["repo"], params, max_items=max_items,
                           max_pages=_max_pages(max_items, per_page))
    return {"issues": [shape_issue(i) for i in page.items], **page.summary()}


async def get_issue(gh: GitHubClient, args: dict[str, Any]) -> Any:
    return shape_issue(await gh.issue(args["owner"], args["repo"], args["issue_number"]), full=True)


async def create_issue(gh: GitHubClient, args: dict[str, Any]) -> Any:
    body = {"title": args["title"]}
    for key in ("body", "labels", "assignees"):
        if key in args:
            body[key] = args[key]
    return shape_issue(await gh.create_issue(args["owner"], args["repo"], body), full=True)


async def add_issue_comment(gh: GitHubClient, args: dict[str, Any]) -> Any:
    c = await gh.add_comment(args["owner"], args["repo"], args["issue_number"], args["body"])
    return {"id": c.get("id"), "html_url": c.get("html_url"), "user": _login(c.get("user")),
            "created_at": c.get("created_at"), "body": c.get("body")}


async def list_pull_requests(gh: GitHubClient, args: dict[str, Any]) -> Any:
    per_page = args.get("per_page", DEFAULT_PER_PAGE)
    max_items = args.get("max_items", DEFAULT_MAX_ITEMS)
    params = {"state": args.get("state", "open"), "base": args.get("base"), "head": args.get("head"),
              "sort": args.get("sort"), "direction": args.get("direction"),
              "per_page": per_page, "page": args.get("page", 1)}
    page = await gh.pulls(args["owner"], args["repo"], params, max_items=max_items,
                          max_pages=_max_pages(max_items, per_page))
    return {"pull_requests": [shape_pull(p) for p in page.items], **page.summary()}


async def get_pull_request(gh: GitHubClient, args: dict[str, Any]) -> Any:
    pull, files = await gh.pull_with_files(args["owner"], args["repo"], args["pull_number"], PR_FILES_CAP)
    return {**shape_pull(pull, full=True), "files": [shape_file(f) for f in files.items],
            "files_truncated": files.has_more}


async def create_pull_request(gh: GitHubClient, args: dict[str, Any]) -> Any:
    body: dict[str, Any] = {k: args[k] for k in ("title", "head", "base")}
    for key in ("body", "draft", "maintainer_can_modify"):
        if key in args:
            body[key] = args[key]
    return shape_pull(await gh.create_pull(args["owner"], args["repo"], body), full=True)


ISSUE_OUT = output_schema({"number": {"type": "integer"}, "title": {"type": "string"}, "state": {"type": "string"},
                           "html_url": {"type": "string"}, "user": {"type": ["string", "null"]},
                           "labels": {"type": "array"}, "assignees": {"type": "array"}})
PULL_OUT = output_schema({"number": {"type": "integer"}, "title": {"type": "string"}, "state": {"type": "string"},
                          "html_url": {"type": "string"}, "head": {"type": ["object", "null"]},
                          "base": {"type": ["object", "null"]}})

TOOLS = [
    Tool("get_me", "The GitHub account this instance's token belongs to (login, id, name, ...).",
         object_schema({}), get_me, output_schema({"login": {"type": "string"}, "id": {"type": "integer"}}),
         title="Current GitHub user"),
    Tool("search_repositories",
         "Search GitHub repositories with GitHub's search syntax, e.g. \"language:python stars:>1000 mcp\" or "
         "\"org:github topic:cli\". Returns one page; use next_page to go on (only the first 1000 results "
         "are reachable).",
         object_schema({"query": {"type": "string", "minLength": 1, "maxLength": 256,
                                  "description": "Search keywords and qualifiers (max 256 characters)"},
                        "sort": {"type": "string", "enum": ["stars", "forks", "help-wanted-issues", "updated"],
                                 "description": "Default: best match"},
                        "order": DIRECTION, "page": {**PAGE, "maximum": 1000}, "per_page": PER_PAGE},
                       ["query"]),
         search_repositories,
         output_schema({"total_count": {"type": "integer"}, "has_more": {"type": "boolean"},
                        "next_page": {"type": ["integer", "null"]}, "items": {"type": "array"}}),
         title="Search repositories"),
    Tool("get_file_contents",
         "A file's text, or a directory's entries, from a GitHub repository at a branch, tag or commit. "
         "Binary files come back base64-encoded; files over 1 MB only with their download_url.",
         object_schema({"owner": OWNER, "repo": REPO, "path": FILE_PATH, "ref": REF}, ["owner", "repo"]),
         get_file_contents,
         output_schema({"type": {"type": "string"}, "path": {"type": "string"}, "content": {"type": ["string", "null"]},
                        "encoding": {"type": ["string", "null"]}, "entries": {"type": "array"}}),
         title="Get file or directory contents"),
    Tool("list_issues",
         "Issues of a repository (pull requests excluded), newest first by default. Follows GitHub's "
         "pagination up to max_items; when has_more is true call again with page=next_page and ignore the "
         "first next_page_skip issues of that page.",
         object_schema({"owner": OWNER, "repo": REPO, "state": STATE,
                        "labels": {"type": "array", "maxItems": 20,
                                   "items": {"type": "string", "pattern": r"^[^,\x00-\x1f]{1,100}$"},
                                   "description": "Only issues carrying all of these label names"},
                        "sort": {"type": "string", "enum": ["created", "updated", "comments"],
                                 "description": "Default created"},
                        "direction": DIRECTION,
                        "since": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$",
                                  "description": "Only issues updated at or after this time (ISO 8601, "
                                                 "e.g. 2026-01-31T00:00:00Z)"},
                        "page": PAGE, "per_page": PER_PAGE, "max_items": MAX_ITEMS},
                       ["owner", "repo"]),
         list_issues, output_schema({"issues": {"type": "array"}, **PAGE_FIELDS}), title="List issues"),
    Tool("get_issue", "One issue of a repository, with its body, labels, assignees and state. (Pull requests "
         "are issues too; is_pull_request tells.)",
         object_schema({"owner": OWNER, "repo": REPO, "issue_number": {**NUMBER, "description": "The issue number"}},
                       ["owner", "repo", "issue_number"]),
         get_issue, ISSUE_OUT, title="Get issue"),
    Tool("create_issue", "Open a new issue in a repository. Labels and assignees the token may not set are "
         "silently dropped by GitHub.",
         object_schema({"owner": OWNER, "repo": REPO,
                        "title": {"type": "string", "minLength": 1, "maxLength": 256},
                        "body": {"type": "string", "maxLength": 65536, "description": "Markdown"},
                        "labels": {"type": "array", "maxItems": 100,
                                   "items": {"type": "string", "minLength": 1, "maxLength": 100},
                                   "description": "Label names"},
                        "assignees": {"type": "array", "maxItems": 10, "items": LOGIN, "description": "Logins"}},
                       ["owner", "repo", "title"]),
         create_issue, ISSUE_OUT, title="Create issue", read_only=False),
    Tool("add_issue_comment", "Comment on an issue or pull request (Markdown).",
         object_schema({"owner": OWNER, "repo": REPO,
                        "issue_number": {**NUMBER, "description": "The issue or pull request number"},
                        "body": {"type": "string", "minLength": 1, "maxLength": 65536}},
                       ["owner", "repo", "issue_number", "body"]),
         add_issue_comment, output_schema({"id": {"type": "integer"}, "html_url": {"type": "string"}}),
         title="Add issue comment", read_only=False),
    Tool("list_pull_requests",
         "Pull requests of a repository, newest first by default. Follows GitHub's pagination up to "
         "max_items; when has_more is true call again with page=next_page and ignore the first "
         "next_page_skip items of that page.",
         object_schema({"owner": OWNER, "repo": REPO, "state": STATE,
                        "base": {**BRANCH, "description": "Only pull requests into this branch"},
                        "head": {"type": "string",
                                 "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}:[^\x00-\x20~^?*\[\\]{1,255}$",
                                 "description": "Only pull requests from this branch, as \"owner:branch\""},
                        "sort": {"type": "string", "enum": ["created", "updated", "popularity", "long-running"],
                                 "description": "Default created"},
                        "direction": DIRECTION, "page": PAGE, "per_page": PER_PAGE, "max_items": MAX_ITEMS},
                       ["owner", "repo"]),
         list_pull_requests, output_schema({"pull_requests": {"type": "array"}, **PAGE_FIELDS}),
         title="List pull requests"),
    Tool("get_pull_request",
         f"One pull request with its merge state and changed files (with diffs; at most {PR_FILES_CAP} files, "
         f"each patch cut at {PATCH_CAP} characters).",
         object_schema({"owner": OWNER, "repo": REPO,
                        "pull_number": {**NUMBER, "description": "The pull request number"}},
                       ["owner", "repo", "pull_number"]),
         get_pull_request, output_schema({**PULL_OUT["properties"], "files": {"type": "array"},
                                          "files_truncated": {"type": "boolean"}}),
         title="Get pull request"),
    Tool("create_pull_request",
         "Open a pull request merging head into base. For a branch of a fork, head is \"owner:branch\".",
         object_schema({"owner": OWNER, "repo": REPO, "title": {"type": "string", "minLength": 1, "maxLength": 256},
                        "head": {"type": "string", "minLength": 1, "maxLength": 356,
                                 "pattern": r"^(?:[A-Za-z0-9][A-Za-z0-9_-]{0,99}:)?[^\x00-\x20~^:?*\[\\]{1,255}$",
                                 "description": "The branch with the changes (\"branch\" or \"owner:branch\")"},
                        "base": {**BRANCH, "description": "The branch to merge into, e.g. \"main\""},
                        "body": {"type": "string", "maxLength": 65536, "description": "Markdown"},
                        "draft": {"type": "boolean", "description": "Open as a draft (default false)"},
                        "maintainer_can_modify": {"type": "boolean",
                                                  "description": "Let maintainers push to the head branch"}},
                       ["owner", "repo", "title", "head", "base"]),
         create_pull_request, PULL_OUT, title="Create pull request", read_only=False),
]
