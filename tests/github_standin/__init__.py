"""A stand-in for GitHub's REST API and git smart-HTTP, served on loopback.

GitHub's API is the one part of the GitHub App flow that cannot run here. The stand-in
speaks its wire format (JSON bodies, status codes, `Authorization` schemes) for the calls
the control plane makes, checks the App's JWT against the App's public key, issues
installation tokens with their expiry and scope, records every call, and serves real bare
repositories through `git http-backend` to a token scoped to them.

- `state`: installations, repositories (real bare repositories), tokens, the call record
- `api`: the Starlette app (REST and git)
- `git_http`: the CGI bridge to `git http-backend`
"""
