"""Users and their API keys."""

from __future__ import annotations

from pydantic import TypeAdapter

from spdlab.client.models.users import ApiKey, User, UserCreated
from spdlab.client.resources._base import API, _Resource

_USERS = TypeAdapter(list[User])
_KEYS = TypeAdapter(list[ApiKey])


class UsersResource(_Resource):
    def me(self) -> User:
        return self._get(f"{API}/users/me", User)

    def list(self) -> list[User]:
        return _USERS.validate_python(self._t.request("GET", f"{API}/users"))

    def create(
        self, name: str, role: str = "member", *, max_active_jobs: int | None = None, with_key: bool = True
    ) -> UserCreated:
        """Admin only. With `with_key`, the answer carries the user's first key (shown once)."""
        body = {"name": name, "role": role, "max_active_jobs": max_active_jobs, "with_key": with_key}
        return self._post(f"{API}/users", UserCreated, body)

    def keys(self) -> list[ApiKey]:
        """Your own keys (public records: prefix, dates; never the secret)."""
        return _KEYS.validate_python(self._t.request("GET", f"{API}/users/me/keys"))

    def create_key(self, user_id: str | int | None = None, *, name: str = "default") -> ApiKey:
        """A new key for yourself, or (admin) for `user_id`; the secret is in `.key`, shown once."""
        return self._post(f"{self._keys_path(user_id)}", ApiKey, {"name": name})

    def revoke_key(self, key_id: str | int, user_id: str | int | None = None) -> ApiKey:
        """Revoke one of your keys, or (admin) one of `user_id`'s."""
        return ApiKey.model_validate(self._delete(f"{self._keys_path(user_id)}/{key_id}"))

    @staticmethod
    def _keys_path(user_id: str | int | None) -> str:
        return f"{API}/users/me/keys" if user_id is None else f"{API}/users/{user_id}/keys"
