"""A local GitHub REST API: GitHub's paths, headers, JSON shapes, Link pagination and error bodies.

Tokens: any ``Authorization: Bearer <token>`` (or ``token <token>``) is valid unless it starts with
``bad`` (401 "Bad credentials"); no Authorization is 401 "Requires authentication". The login of
/user is derived from the token, so a test can tell whose token was used. An unsupported
``X-GitHub-Api-Version`` is a 400, a non-JSON ``Accept`` a 415. Every repository exists with the
same generated content except ``nobody/missing`` (404). Each repository has 75 issues, every fourth
of which is a pull request; next-page links use ``/repositories/{id}/...`` as GitHub's do. Use
``fail()`` with ``rate_limit_headers()`` for rate limits, and for 5xx.

OAuth (a GitHub App with expiring user tokens): ``/login/oauth/authorize`` redirects back with a code as a
user who clicks "Authorize"; ``/login/oauth/access_token`` exchanges it (form or query parameters, answer
form-encoded unless ``Accept: application/json``) and refreshes with ``grant_type=refresh_token``, rotating
the single-use refresh token and invalidating the previous access token. Errors are HTTP 200 with
``error``/``error_description``/``error_uri``. Issued tokens are checked by the API (expired, revoked or
superseded: 401 "Bad credentials") and ``/user`` answers their account's login.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.simulators.base import Simulator
from tests.simulators.oauth import OAuthMixin, ProviderRules, client_credentials, form_of

TOKEN = web.RequestKey("token", str)
LOGIN = web.RequestKey("login", str)
DOCS = "https://docs.github.com/rest"
SUPPORTED_VERSIONS = ("2022-11-28", "2026-03-10")
ACCEPTABLE = ("application/vnd.github+json", "application/vnd.github.v3+json", "application/json", "*/*")
ISSUE_COUNT = 75
PRIMARY_MESSAGE = "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please " \
                  "include the request ID 0000:0000:0000000:0000000:00000000."
SECONDARY_MESSAGE = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. " \
                    "If you reach out to GitHub Support for help, please include the request ID " \
                    "0000:0000:0000000:0000000:00000000."

TEXT_FILES = {
    "src/app.py": "print('hello')\n",
    "docs/c#/a b?.md": "# Odd name\n",
}
LOGO = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
BIG_SIZE = 2_000_000


def user_for(token: str, login: str | None = None) -> dict[str, Any]:
    """The user a token belongs to: an OAuth grant's account, else one derived from the token."""
    digest = hashlib.sha256((login or token).encode()).hexdigest()
    login = login or f"user-{digest[:8]}"
    return {"login": login, "id": int(digest[:7], 16), "node_id": f"U_{digest[:12]}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{int(digest[:7], 16)}?v=4",
            "html_url": f"https://github.com/{login}", "type": "User", "site_admin": False,
            "name": f"User {digest[:4]}", "company": None, "blog": "", "location": None, "email": None,
            "bio": None, "public_repos": 3, "followers": 0, "following": 0,
            "created_at": "2020-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}


def _short_user(login: str) -> dict[str, Any]:
    return {"login": login, "id": int(hashlib.sha256(login.encode()).hexdigest()[:7], 16), "type": "User",
            "html_url": f"https://github.com/{login}"}


def error(status: int, message: str, docs: str = DOCS, **extra: Any) -> web.Response:
    return web.json_response({"message": message, "documentation_url": docs, "status": str(status), **extra},
                             status=status)


def rate_limit_headers(*, remaining: int = 4999, limit: int = 5000, reset: int | None = None,
                       resource: str = "core", retry_after: int | None = None) -> dict[str, str]:
    """GitHub's rate-limit headers, as every answer carries them (for ``fail()`` too)."""
    reset = reset if reset is not None else int(time.time()) + 3600
    headers = {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining),
               "x-ratelimit-reset": str(reset), "x-ratelimit-used": str(limit - remaining),
               "x-ratelimit-resource": resource}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return headers


def _b64(data: bytes) -> str:
    # GitHub wraps base64 content at 60 characters per line.
    text = base64.b64encode(data).decode()
    return "".join(text[i:i + 60] + "\n" for i in range(0, len(text), 60))


OAUTH_DOCS = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"
OAUTH_ERRORS = {
    "incorrect_client_credentials": ("The client_id and/or client_secret passed are incorrect.",
                                     f"{OAUTH_DOCS}/#incorrect-client-credentials"),
    "redirect_uri_mismatch": ("The redirect_uri MUST match the registered callback URL for this application.",
                              f"{OAUTH_DOCS}/#redirect-uri-mismatch2"),
    "bad_verification_code": ("The code passed is incorrect or expired.", f"{OAUTH_DOCS}/#bad-verification-code"),
    "bad_refresh_token": ("The refresh token passed is incorrect or expired.",
                          "https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/"
                          "refreshing-user-access-tokens"),
    "unsupported_grant_type": ("The grant type is not supported.", OAUTH_DOCS),
}
GITHUB_RULES = ProviderRules(access_prefix="ghu_", refresh_prefix="ghr_", default_access_lifetime_s=28800,
                             default_refresh_lifetime_s=15897600, rotate_refresh=True,
                             refresh_kills_old_access=True)


def _oauth_answer(request: web.Request, data: dict[str, Any]) -> web.Response:
    """GitHub answers the token endpoint form-encoded unless the client asks for JSON (errors too, status 200)."""
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response(data)
    return web.Response(text=urlencode({k: v for k, v in data.items() if v is not None}),
                        content_type="application/x-www-form-urlencoded")


class GitHubSimulator(OAuthMixin, Simulator):
    oauth_rules = GITHUB_RULES
    oauth_env_prefix = "GITHUB"
    authorize_path = "/login/oauth/authorize"
    token_path = "/login/oauth/access_token"
    default_scope = ""

    def __init__(self) -> None:
        super().__init__(name="github")
        self._oauth_init()
        self._repo_ids: dict[int, tuple[str, str]] = {}
        self.created_issues: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.comments: list[dict[str, Any]] = []
        self.pulls_created: list[dict[str, Any]] = []
        # Files of each pull request by number; #8 has enough to need three pages.
        self.pr_file_counts = {8: 250}

    def reset(self) -> None:
        super().reset()
        self.created_issues.clear()
        self.comments.clear()
        self.pulls_created.clear()

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._checks)
        r = app.router
        r.add_get(self.authorize_path, self.oauth_authorize)
        r.add_post(self.token_path, self.oauth_token)
        r.add_get("/user", self.me)
        r.add_get("/search/repositories", self.search)
        r.add_get("/repos/{owner}/{repo}", self.repository)
        r.add_get("/repos/{owner}/{repo}/contents", self.contents)
        r.add_get("/repos/{owner}/{repo}/contents/{path:.*}", self.contents)
        r.add_get("/repos/{owner}/{repo}/issues", self.list_issues)
        r.add_get("/repositories/{id}/issues", self.list_issues)
        r.add_post("/repos/{owner}/{repo}/issues", self.create_issue)
        r.add_get("/repos/{owner}/{repo}/issues/{number}", self.get_issue)
        r.add_post("/repos/{owner}/{repo}/issues/{number}/comments", self.add_comment)
        r.add_get("/repos/{owner}/{repo}/pulls", self.list_pulls)
        r.add_get("/repositories/{id}/pulls", self.list_pulls)
        r.add_post("/repos/{owner}/{repo}/pulls", self.create_pull)
        r.add_get("/repos/{owner}/{repo}/pulls/{number}", self.get_pull)
        r.add_get("/repos/{owner}/{repo}/pulls/{number}/files", self.pull_files)
        r.add_get("/repositories/{id}/pulls/{number}/files", self.pull_files)

    # Wire-level checks ----------------------------------------------------------------------------

    @web.middleware
    async def _checks(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/login/oauth/"):
            return await handler(request)  # github.com itself, not the API
        version = request.headers.get("X-GitHub-Api-Version")
        if version is not None and version not in SUPPORTED_VERSIONS:
            return error(400, f"API version {version!r} is not supported.",
                         "https://docs.github.com/rest/overview/api-versions")
        accept = request.headers.get("Accept")
        if accept and not any(a.split(";")[0].strip() in ACCEPTABLE for a in accept.split(",")):
            return error(415, f"Unsupported 'Accept' header: [{accept!r}]. Must accept 'application/json'.",
                         "https://docs.github.com/v3/media")
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if not auth:
            return error(401, "Requires authentication")
        if scheme.lower() not in ("bearer", "token") or not token or token.startswith("bad"):
            return error(401, "Bad credentials")
        status, grant = self._oauth.check_access(token)
        if status in ("expired", "revoked"):
            return error(401, "Bad credentials")
        request[TOKEN] = token
        if grant is not None:
            request[LOGIN] = grant.account
        if request.match_info.get("owner") == "nobody" and request.match_info.get("repo") == "missing":
            return error(404, "Not Found")
        resp = await handler(request)
        search = request.path.startswith("/search/")
        resp.headers.update(rate_limit_headers(limit=30 if search else 5000, remaining=29 if search else 4999,
                                               resource="search" if search else "core"))
        return resp

    def _user(self, request: web.Request) -> dict[str, Any]:
        return user_for(request[TOKEN], request.get(LOGIN))

    # OAuth ----------------------------------------------------------------------------------------

    async def oauth_authorize(self, request: web.Request) -> web.Response:
        def missing(name: str) -> web.Response:
            # GitHub shows an HTML page (404 for an unknown application) rather than redirecting.
            return web.Response(status=404 if name == "client_id" else 400, content_type="text/html",
                                text=f"<html><body>Invalid {name}</body></html>")
        deny = {"error": "access_denied", "error_description": "The user has denied your application access.",
                "error_uri": "https://docs.github.com/apps/managing-oauth-apps/"
                             "troubleshooting-authorization-request-errors/#access-denied"}
        return await self._authorize(request, missing, deny)

    def _requested_scope(self, request: web.Request) -> str:
        # A GitHub App's user token carries the app's permissions, and its "scope" is always empty.
        return ""

    async def oauth_token(self, request: web.Request) -> web.Response:
        args = await form_of(request)
        grant_type = args.get("grant_type") or "authorization_code"
        credential = args.get("refresh_token" if grant_type == "refresh_token" else "code", "")
        oauth = self._oauth

        def fail(code: str, account: str | None = None) -> web.Response:
            oauth.record_locked(grant_type, credential, code, account)
            description, uri = OAUTH_ERRORS[code]
            return _oauth_answer(request, {"error": code, "error_description": description, "error_uri": uri})

        with self._lock:
            injected = oauth.take_failure_locked()
            if injected is not None:
                oauth.record_locked(grant_type, credential, f"http_{injected}")
                return web.Response(status=injected, text="<html><body>Service unavailable</body></html>",
                                    content_type="text/html")
            client_id, secret = client_credentials(request, args)
            if client_id != oauth.client_id or secret != oauth.client_secret:
                return fail("incorrect_client_credentials")
            if grant_type == "refresh_token":
                reason, grant, tokens = oauth.use_refresh_locked(credential)
                if reason != "ok":
                    return fail("bad_refresh_token", grant.account if grant else None)
            elif grant_type == "authorization_code":
                reason, code, tokens = oauth.exchange_code_locked(credential, args.get("redirect_uri"),
                                                                  args.get("code_verifier"), client_id)
                if reason == "redirect_uri":
                    return fail("redirect_uri_mismatch")
                if code is None:
                    return fail("bad_verification_code")
            else:
                return fail("unsupported_grant_type")
        return _oauth_answer(request, {"access_token": tokens["access_token"], "expires_in": tokens["expires_in"],
                                       "refresh_token": tokens["refresh_token"],
                                       "refresh_token_expires_in": tokens["refresh_token_expires_in"],
                                       "scope": "", "token_type": "bearer"})

    # Data -----------------------------------------------------------------------------------------

    def repo_id(self, owner: str, repo: str) -> int:
        rid = int(hashlib.sha256(f"{owner}/{repo}".lower().encode()).hexdigest()[:7], 16)
        self._repo_ids[rid] = (owner, repo)
        return rid

    def _repo_of(self, request: web.Request) -> tuple[str, str] | None:
        if "id" in request.match_info:
            return self._repo_ids.get(int(request.match_info["id"]))
        return request.match_info["owner"], request.match_info["repo"]

    def repo_json(self, owner: str, repo: str) -> dict[str, Any]:
        full = f"{owner}/{repo}"
        return {"id": self.repo_id(owner, repo), "node_id": f"R_{full}", "name": repo, "full_name": full,
                "private": False, "owner": _short_user(owner), "html_url": f"https://github.com/{full}",
                "description": f"The {repo} repository", "fork": False, "url": f"https://api.github.com/repos/{full}",
                "created_at": "2021-01-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z",
                "pushed_at": "2026-11-02T00:00:00Z", "stargazers_count": 42, "watchers_count": 42,
                "language": "Python", "forks_count": 7, "archived": False, "disabled": False,
                "open_issues_count": 12, "topics": ["demo"], "visibility": "public", "default_branch": "main"}

    def issue_json(self, owner: str, repo: str, n: int) -> dict[str, Any]:
        full = f"{owner}/{repo}"
        labels = [name for name, every in (("bug", 3), ("docs", 7)) if n % every == 0]
        closed = n % 5 == 0
        item: dict[str, Any] = {
            "id": 1000 + n, "node_id": f"I_{n}", "number": n, "title": f"Issue {n}",
            "url": f"https://api.github.com/repos/{full}/issues/{n}", "html_url": f"https://github.com/{full}/issues/{n}",
            "user": _short_user("octocat"), "state": "closed" if closed else "open",
            "state_reason": "completed" if closed else None, "locked": False,
            "labels": [{"id": hash(name) & 0xFFFF, "name": name, "color": "d73a4a", "default": name == "bug"}
                       for name in labels],
            "assignees": [_short_user("hubot")] if n % 2 else [], "assignee": _short_user("hubot") if n % 2 else None,
            "milestone": {"number": 1, "title": "v1.0"} if n == 1 else None, "comments": n % 4,
            "created_at": f"2026-01-01T{n % 24:02d}:00:00Z", "updated_at": f"2026-02-01T{n % 24:02d}:00:00Z",
            "closed_at": "2026-03-01T00:00:00Z" if closed else None, "author_association": "OWNER",
            "body": f"Body of issue {n}",
        }
        if n % 4 == 0:
            item["pull_request"] = {"url": f"https://api.github.com/repos/{full}/pulls/{n}",
                                    "html_url": f"https://github.com/{full}/pull/{n}",
                                    "diff_url": f"https://github.com/{full}/pull/{n}.diff",
                                    "patch_url": f"https://github.com/{full}/pull/{n}.patch", "merged_at": None}
            item["title"] = f"PR {n}"
        return item

    def pull_json(self, owner: str, repo: str, n: int) -> dict[str, Any]:
        full = f"{owner}/{repo}"
        issue = self.issue_json(owner, repo, n)
        base = "release" if n % 3 == 0 else "main"
        repo_obj = {"id": self.repo_id(owner, repo), "full_name": full, "name": repo}
        return {
            "id": 5000 + n, "number": n, "state": issue["state"], "locked": False, "title": issue["title"],
            "user": issue["user"], "body": issue["body"], "labels": issue["labels"],
            "html_url": f"https://github.com/{full}/pull/{n}", "url": f"https://api.github.com/repos/{full}/pulls/{n}",
            "created_at": issue["created_at"], "updated_at": issue["updated_at"], "closed_at": issue["closed_at"],
            "merged_at": None, "draft": n % 8 == 0,
            "head": {"label": f"octocat:feature-{n}", "ref": f"feature-{n}", "sha": f"{n:040x}",
                     "user": _short_user("octocat"), "repo": repo_obj},
            "base": {"label": f"{owner}:{base}", "ref": base, "sha": "b" * 40, "user": _short_user(owner),
                     "repo": repo_obj},
            "merged": False, "mergeable": True, "mergeable_state": "clean", "merged_by": None,
            "comments": 1, "review_comments": 2, "commits": 3, "additions": 10, "deletions": 4,
            "changed_files": self.pr_file_counts.get(n, 2), "requested_reviewers": [_short_user("hubot")],
        }

    def _link(self, request: web.Request, path: str, page: int, last: int) -> str:
        query = {k: v for k, v in request.query.items() if k != "page"}
        links = []
        for rel, target in (("prev", page - 1), ("next", page + 1), ("last", last), ("first", 1)):
            if (rel in ("prev", "first") and page > 1) or (rel in ("next", "last") and page < last):
                links.append(f'<{self.url}{path}?{urlencode({**query, "page": target})}>; rel="{rel}"')
        return ", ".join(links)

    def _paging(self, request: web.Request, total: int, path: str) -> tuple[slice, str]:
        """The slice of items this request's page/per_page selects, and its Link header."""
        per_page = min(100, max(1, int(request.query.get("per_page", "30"))))
        page = max(1, int(request.query.get("page", "1")))
        last = max(1, -(-total // per_page))
        return slice((page - 1) * per_page, page * per_page), self._link(request, path, page, last)

    def _page(self, request: web.Request, items: list[Any], path: str, wrap: Any = None) -> web.Response:
        window, link = self._paging(request, len(items), path)
        resp = web.json_response(items[window] if wrap is None else wrap(items[window]))
        if link:
            resp.headers["Link"] = link
        return resp

    # Handlers -------------------------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response(self._user(request))

    async def search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "").strip()
        if not q:
            return error(422, "Validation Failed", "https://docs.github.com/v3/search",
                         errors=[{"resource": "Search", "field": "q", "code": "missing"}])
        per_page = min(100, max(1, int(request.query.get("per_page", "30"))))
        if (int(request.query.get("page", "1")) - 1) * per_page >= 1000:
            return error(422, "Only the first 1000 search results are available", "https://docs.github.com/v3/search/")
        word = "".join(c for c in q.split()[0] if c.isalnum()) or "repo"
        repos = [{**self.repo_json(f"owner{i}", f"{word}-{i}"), "score": 1.0} for i in range(1, 46)]
        return self._page(request, repos, "/search/repositories",
                          wrap=lambda chunk: {"total_count": len(repos), "incomplete_results": False,
                                              "items": chunk})

    async def repository(self, request: web.Request) -> web.Response:
        return web.json_response(self.repo_json(request.match_info["owner"], request.match_info["repo"]))

    def _file_json(self, owner: str, repo: str, path: str, ref: str, data: bytes | None,
                   size: int | None = None) -> dict[str, Any]:
        full = f"{owner}/{repo}"
        sha = hashlib.sha1(path.encode() + ref.encode()).hexdigest()
        out = {"type": "file", "size": size if size is not None else len(data or b""), "name": path.rsplit("/", 1)[-1],
               "path": path, "sha": sha, "url": f"https://api.github.com/repos/{full}/contents/{path}?ref={ref}",
               "git_url": f"https://api.github.com/repos/{full}/git/blobs/{sha}",
               "html_url": f"https://github.com/{full}/blob/{ref}/{path}",
               "download_url": f"https://raw.githubusercontent.com/{full}/{ref}/{path}"}
        if data is None:
            return {**out, "content": "", "encoding": "none"}
        return {**out, "content": _b64(data), "encoding": "base64"}

    def _files(self, repo: str, ref: str) -> dict[str, bytes | None]:
        files: dict[str, bytes | None] = {"README.md": f"# {repo}\n\nref: {ref}\n".encode(), "logo.png": LOGO,
                                          "big.bin": None}
        files.update({p: t.encode() for p, t in TEXT_FILES.items()})
        return files

    async def contents(self, request: web.Request) -> web.Response:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        path = request.match_info.get("path", "").strip("/")
        ref = request.query.get("ref", "main")
        files = self._files(repo, ref)
        if path in files:
            data = files[path]
            return web.json_response(self._file_json(owner, repo, path, ref, data,
                                                     BIG_SIZE if data is None else None))
        prefix = f"{path}/" if path else ""
        entries: dict[str, dict[str, Any]] = {}
        for name, data in files.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            head, sep, _ = rest.partition("/")
            child = prefix + head
            if sep:
                entries.setdefault(child, {"type": "dir", "name": head, "path": child, "size": 0,
                                           "sha": hashlib.sha1(child.encode()).hexdigest(),
                                           "html_url": f"https://github.com/{owner}/{repo}/tree/{ref}/{child}",
                                           "download_url": None})
            else:
                entry = self._file_json(owner, repo, child, ref, data, BIG_SIZE if data is None else None)
                entries[child] = {k: v for k, v in entry.items() if k not in ("content", "encoding")}
        if not entries:
            return error(404, "Not Found", "https://docs.github.com/rest/repos/contents#get-repository-content")
        return web.json_response(list(entries.values()))

    def _issues(self, owner: str, repo: str) -> list[dict[str, Any]]:
        generated = [self.issue_json(owner, repo, n) for n in range(1, ISSUE_COUNT + 1)]
        return generated + self.created_issues.get((owner, repo), [])

    async def list_issues(self, request: web.Request) -> web.Response:
        found = self._repo_of(request)
        if found is None:
            return error(404, "Not Found")
        owner, repo = found
        state = request.query.get("state", "open")
        wanted = [lb for lb in request.query.get("labels", "").split(",") if lb]
        items = [i for i in self._issues(owner, repo) if state == "all" or i["state"] == state]
        items = [i for i in items if all(w in {lb["name"] for lb in i["labels"]} for w in wanted)]
        items.sort(key=lambda i: i["number"], reverse=request.query.get("direction", "desc") == "desc")
        return self._page(request, items, f"/repositories/{self.repo_id(owner, repo)}/issues")

    async def get_issue(self, request: web.Request) -> web.Response:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        n = int(request.match_info["number"])
        found = next((i for i in self._issues(owner, repo) if i["number"] == n), None)
        if found is None:
            return error(404, "Not Found", "https://docs.github.com/rest/issues/issues#get-an-issue")
        return web.json_response(found)

    async def create_issue(self, request: web.Request) -> web.Response:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        body = await request.json()
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(title, str) or not title.strip():
            return error(422, "Validation Failed", "https://docs.github.com/rest/issues/issues#create-an-issue",
                         errors=[{"resource": "Issue", "code": "missing_field", "field": "title"}])
        created = self.created_issues.setdefault((owner, repo), [])
        n = ISSUE_COUNT + len(created) + 1
        full = f"{owner}/{repo}"
        issue = {**self.issue_json(owner, repo, 1), "id": 9000 + n, "number": n, "title": title,
                 "body": body.get("body"), "user": _short_user(self._user(request)["login"]),
                 "labels": [{"name": name, "color": "ededed", "default": False} for name in body.get("labels", [])],
                 "assignees": [_short_user(a) for a in body.get("assignees", [])], "milestone": None,
                 "state": "open", "state_reason": None, "closed_at": None, "comments": 0,
                 "html_url": f"https://github.com/{full}/issues/{n}",
                 "url": f"https://api.github.com/repos/{full}/issues/{n}"}
        created.append(issue)
        return web.json_response(issue, status=201)

    async def add_comment(self, request: web.Request) -> web.Response:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        n = int(request.match_info["number"])
        if not any(i["number"] == n for i in self._issues(owner, repo)):
            return error(404, "Not Found", "https://docs.github.com/rest/issues/comments#create-an-issue-comment")
        body = await request.json()
        if not isinstance(body, dict) or not body.get("body"):
            return error(422, "Validation Failed", errors=[{"resource": "IssueComment", "code": "missing_field",
                                                           "field": "body"}])
        cid = 7000 + len(self.comments)
        full = f"{owner}/{repo}"
        comment = {"id": cid, "node_id": f"IC_{cid}", "url": f"https://api.github.com/repos/{full}/issues/comments/{cid}",
                   "html_url": f"https://github.com/{full}/issues/{n}#issuecomment-{cid}", "body": body["body"],
                   "user": _short_user(self._user(request)["login"]), "created_at": "2026-11-25T12:00:00Z",
                   "updated_at": "2026-11-25T12:00:00Z", "issue_url": f"https://api.github.com/repos/{full}/issues/{n}",
                   "author_association": "OWNER"}
        self.comments.append(comment)
        return web.json_response(comment, status=201)

    async def list_pulls(self, request: web.Request) -> web.Response:
        found = self._repo_of(request)
        if found is None:
            return error(404, "Not Found")
        owner, repo = found
        state = request.query.get("state", "open")
        pulls = [self.pull_json(owner, repo, n) for n in range(ISSUE_COUNT, 0, -1) if n % 4 == 0]
        pulls = [p for p in pulls if state == "all" or p["state"] == state]
        if "base" in request.query:
            pulls = [p for p in pulls if p["base"]["ref"] == request.query["base"]]
        if "head" in request.query:
            pulls = [p for p in pulls if p["head"]["label"] == request.query["head"]]
        return self._page(request, pulls, f"/repositories/{self.repo_id(owner, repo)}/pulls")

    async def get_pull(self, request: web.Request) -> web.Response:
        n = int(request.match_info["number"])
        if n % 4 or n > ISSUE_COUNT:
            return error(404, "Not Found", "https://docs.github.com/rest/pulls/pulls#get-a-pull-request")
        return web.json_response(self.pull_json(request.match_info["owner"], request.match_info["repo"], n))

    async def pull_files(self, request: web.Request) -> web.Response:
        found = self._repo_of(request)
        if found is None:
            return error(404, "Not Found")
        owner, repo = found
        n = int(request.match_info["number"])
        if n % 4 or n > ISSUE_COUNT:
            return error(404, "Not Found", "https://docs.github.com/rest/pulls/pulls#list-pull-requests-files")
        files = [{"sha": f"{i:040x}", "filename": f"src/file{i}.py", "status": "modified" if i else "added",
                  "additions": 2, "deletions": 1, "changes": 3,
                  "blob_url": f"https://github.com/{owner}/{repo}/blob/{n:040x}/src/file{i}.py",
                  "raw_url": f"https://github.com/{owner}/{repo}/raw/{n:040x}/src/file{i}.py",
                  "contents_url": f"https://api.github.com/repos/{owner}/{repo}/contents/src/file{i}.py",
                  "patch": f"@@ -1 +1,2 @@\n-old {i}\n+new {i}\n+more {i}"}
                 for i in range(self.pr_file_counts.get(n, 2))]
        return self._page(request, files, f"/repositories/{self.repo_id(owner, repo)}/pulls/{n}/files")

    async def create_pull(self, request: web.Request) -> web.Response:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        body = await request.json()
        docs = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"
        missing = [f for f in ("title", "head", "base") if not body.get(f)]
        if missing:
            return error(422, "Validation Failed", docs,
                         errors=[{"resource": "PullRequest", "code": "missing_field", "field": f} for f in missing])
        head = body["head"].split(":", 1)[-1]
        if head == body["base"]:
            return error(422, "Validation Failed", docs, errors=[
                {"resource": "PullRequest", "code": "custom",
                 "message": f"No commits between {body['base']} and {head}"}])
        if head == "existing":
            return error(422, "Validation Failed", docs, errors=[
                {"resource": "PullRequest", "code": "custom",
                 "message": f"A pull request already exists for {owner}:{head}."}])
        n = 100 + len(self.pulls_created)
        pull = {**self.pull_json(owner, repo, 4), "id": 8000 + n, "number": n, "title": body["title"],
                "body": body.get("body"), "draft": bool(body.get("draft", False)), "state": "open", "labels": [],
                "user": _short_user(self._user(request)["login"]), "closed_at": None,
                "html_url": f"https://github.com/{owner}/{repo}/pull/{n}", "mergeable": None,
                "mergeable_state": "unknown", "changed_files": 1}
        label = body["head"] if ":" in body["head"] else f"{owner}:{head}"
        pull["head"] = {**pull["head"], "ref": head, "label": label}
        pull["base"] = {**pull["base"], "ref": body["base"], "label": f"{owner}:{body['base']}"}
        self.pulls_created.append(pull)
        return web.json_response(pull, status=201)
