"""Prompts: create (text or token ids), list, get, delete."""

from __future__ import annotations

from collections.abc import Sequence

from spdlab.client.models.graphs import GraphSummary, Prompt, PromptPage
from spdlab.client.resources._base import API, _Resource


class PromptsResource(_Resource):
    def create(self, decomposition_id: str | int, *, text: str | None = None,
               token_ids: Sequence[int] | None = None) -> Prompt:
        """Exactly one of `text` (tokenized server side) or `token_ids`."""
        body = {"decomposition_id": int(decomposition_id), "text": text,
                "token_ids": None if token_ids is None else list(token_ids)}
        return self._post(f"{API}/prompts", Prompt, body)

    def list(self, *, decomposition_id: str | int | None = None, owner: str | int | None = None,
             limit: int | None = None, offset: int | None = None) -> PromptPage:
        params = {"decomposition_id": decomposition_id, "owner": owner, "limit": limit, "offset": offset}
        return self._page(f"{API}/prompts", PromptPage, params)

    def get(self, prompt_id: str | int) -> Prompt:
        return self._get(f"{API}/prompts/{prompt_id}", Prompt)

    def graphs(self, prompt_id: str | int) -> list[GraphSummary]:
        return [GraphSummary.model_validate(g) for g in self._t.request("GET", f"{API}/prompts/{prompt_id}/graphs")]

    def delete(self, prompt_id: str | int) -> None:
        """Deletes its graphs and interventions too."""
        self._delete(f"{API}/prompts/{prompt_id}")
