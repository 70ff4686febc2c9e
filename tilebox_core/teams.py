"""``Teams``: a server's tenants, each with one ACL user per role (developer, runner, auditor),
created, listed, rotated and deleted by a session connected as an administrator. See
``tilebox_core.redis.acl`` for how (every node of a cluster, saved where the server has an ACL
file) and ``tilebox_core.domain.tenancy`` for what each role may do."""

from __future__ import annotations

import msgspec

from tilebox_core.domain.tenancy import Role, TeamChange, TeamStatus, parse_role
from tilebox_core.redis.acl import AccessControl
from tilebox_core.redis.connection import with_credentials

from .session import Session


class Teams:
    def __init__(self, client: Session) -> None:
        self._client = client
        self._access = AccessControl(client.redis, client.prefix)

    def create(self, team: str) -> TeamChange:
        """Users for every role of ``team``, with new secrets (in the result only: the server
        keeps their hashes; the embedded server's credentials file keeps them too). A deleted
        team is enabled again, with new secrets."""
        return self._kept(self._with_urls(self._access.create(team)))

    def all(self) -> list[TeamStatus]:
        return self._access.teams()

    def find(self, team: str) -> TeamStatus:
        return self._access.team(team)

    def rotate(self, team: str, role: Role | str, *, finish: bool = False) -> TeamChange:
        """A new secret for ``team``'s ``role`` user; the previous one keeps working until the
        rotation is finished (``finish=True``, or the next rotation)."""
        chosen = role if isinstance(role, Role) else parse_role(role)
        return self._kept(self._with_urls(self._access.rotate(team, chosen, finish=finish)))

    def delete(self, team: str) -> TeamChange:
        """Disable ``team``'s users and close their connections; its data stays."""
        change = self._access.delete(team)
        if self._client.embedded is not None:
            self._client.embedded.remember((), forget=change.users)
        return change

    def _kept(self, change: TeamChange) -> TeamChange:
        """``change``, its new secrets kept by the embedded server (if that is the server)."""
        if self._client.embedded is not None and change.credentials:
            self._client.embedded.remember(change.credentials)
        return change

    def _with_urls(self, change: TeamChange) -> TeamChange:
        url = self._client.url
        credentials = [
            msgspec.structs.replace(c, url=with_credentials(url, c.user, c.secret))
            for c in change.credentials
        ]
        return msgspec.structs.replace(change, credentials=credentials)
