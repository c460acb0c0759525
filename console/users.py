"""Who may log in to the console over SSH: a TOML users file binding user names to public keys and roles.

    [[user]]
    name = "alice"
    role = "operator"          # viewer | operator | admin
    keys = ["ssh-ed25519 AAAA... alice@laptop"]

A key authenticates only the user it is listed under: alice's key offered as "bob" is refused.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from wasmbed import paths
from wasmbed.gateway.facade import Caller, Role


class UsersError(Exception):
    """The users file is missing or malformed."""


def users_path() -> Path:
    return paths.config_dir() / "users.toml"


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    keys: tuple[bytes, ...]  # SSH wire-format public key blobs

    @property
    def caller(self) -> Caller:
        return Caller(self.name, self.role)


def _key_blob(text: str, where: str) -> bytes:
    try:
        return asyncssh.import_public_key(text.strip()).public_data
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise UsersError(f"{where}: not an OpenSSH public key: {exc}") from None


class Users:
    """An immutable table of users; :meth:`authorize` is the only question the SSH server asks."""

    def __init__(self, users: Iterable[User] = ()) -> None:
        self._users: dict[str, User] = {}
        for u in users:
            if u.name in self._users:
                raise UsersError(f"user {u.name!r} is listed twice")
            self._users[u.name] = u

    def __len__(self) -> int:
        return len(self._users)

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def authorize(self, name: str, key: asyncssh.SSHKey) -> User | None:
        """The user if ``key`` is registered for exactly this user name, else None."""
        user = self._users.get(name)
        if user is None:
            return None
        return user if key.public_data in user.keys else None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str = "users") -> Users:
        entries = data.get("user", [])
        if not isinstance(entries, list):
            raise UsersError(f"{source}: [[user]] must be an array of tables")
        users = []
        for i, entry in enumerate(entries, 1):
            where = f"{source}: user #{i}"
            if not isinstance(entry, dict):
                raise UsersError(f"{where}: not a table")
            name = entry.get("name")
            if not isinstance(name, str) or not name or any(c.isspace() for c in name):
                raise UsersError(f"{where}: 'name' must be a non-empty string without spaces")
            where = f"{source}: user {name!r}"
            role_text = entry.get("role", "viewer")
            try:
                role = Role[str(role_text).upper()]
            except KeyError:
                choices = ", ".join(r.name.lower() for r in Role)
                raise UsersError(f"{where}: role {role_text!r} is not one of {choices}") from None
            keys = entry.get("keys", [])
            if isinstance(keys, str):
                keys = [keys]
            if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
                raise UsersError(f"{where}: 'keys' must be a non-empty list of public keys")
            unknown = set(entry) - {"name", "role", "keys"}
            if unknown:
                raise UsersError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
            users.append(User(name, role, tuple(_key_blob(k, where) for k in keys)))
        return cls(users)

    @classmethod
    def load(cls, path: Path) -> Users:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsersError(f"{path}: no such file (who may log in: see `wasmbed-console serve -h`)") from None
        except OSError as exc:
            raise UsersError(f"{path}: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsersError(f"{path}: {exc}") from None
        return cls.from_mapping(data, str(path))
