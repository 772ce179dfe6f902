"""Prompts: create from text (the decomposition's tokenizer) or token ids, list, get, delete.

No model runs here: validation uses the decomposition's stored summary (vocabulary size, context
length) and its tokenizer, so a bad prompt is a 422 naming the problem, never a failed job.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy import func, select

from spdlab.api.deps import OffsetQuery, SessionDep, UserDep, ensure_owner_or_admin
from spdlab.api.graph_deps import get_decomposition, get_prompt, tokenizer_cache, unprocessable
from spdlab.api.tokenizer_cache import TokenizerCache, prompt_token_strings
from spdlab.common.contracts.graphs import PromptCreate, PromptOut, PromptPage
from spdlab.common.models import Decomposition, Prompt

router = APIRouter(prefix="/api/v1/prompts", tags=["prompts"])
TokCacheDep = Annotated[TokenizerCache, Depends(tokenizer_cache)]


def prompt_out(prompt: Prompt, tokens: TokenizerCache, decomposition: Decomposition) -> PromptOut:
    out = PromptOut.model_validate(prompt)
    out.tokens = prompt_token_strings(tokens.get(decomposition.tokenizer_ref), list(prompt.token_ids))
    return out


def validate_token_ids(ids: list[int], decomposition: Decomposition, field: str = "token_ids") -> None:
    summary = decomposition.summary or {}
    vocab, n_ctx = summary.get("vocab_size"), summary.get("n_ctx")
    if not ids:
        raise unprocessable(field, "the prompt has no tokens")
    if vocab is not None:
        unknown = sorted({i for i in ids if not 0 <= i < vocab})
        if unknown:
            shown = ", ".join(map(str, unknown[:50])) + (" …" if len(unknown) > 50 else "")
            raise unprocessable(field, f"{len(unknown)} unknown token id(s) (vocabulary size {vocab}): {shown}")
    if n_ctx is not None and len(ids) > n_ctx:
        raise unprocessable(field, f"the prompt has {len(ids)} tokens; the context length is {n_ctx}")


@router.post("", response_model=PromptOut, status_code=status.HTTP_201_CREATED)
def create_prompt(body: PromptCreate, user: UserDep, session: SessionDep, tokens: TokCacheDep) -> PromptOut:
    decomposition = get_decomposition(session, body.decomposition_id)
    tok = tokens.get(decomposition.tokenizer_ref)
    if body.text is not None:
        if not body.text.strip():
            raise unprocessable("text", "the text is empty")
        if tok is None:
            raise unprocessable("text", "this decomposition has no tokenizer; give token_ids instead")
        ids = tok.encode(body.text, add_special_tokens=False).ids
        text = body.text
    else:
        ids = list(body.token_ids or [])
        text = ""
    validate_token_ids(ids, decomposition, "text" if body.text is not None else "token_ids")
    if body.token_ids is not None:
        text = tok.decode(ids, skip_special_tokens=False) if tok is not None else " ".join(map(str, ids))
    prompt = Prompt(decomposition_id=decomposition.id, owner_id=user.id, text=text, token_ids=ids)
    session.add(prompt)
    session.commit()
    return prompt_out(prompt, tokens, decomposition)


@router.get("", response_model=PromptPage)
def list_prompts(
    user: UserDep,
    session: SessionDep,
    tokens: TokCacheDep,
    decomposition_id: int | None = None,
    owner: Annotated[str | None, Query(pattern=r"^(me|\d{1,18})$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
) -> PromptPage:
    query = select(Prompt)
    if decomposition_id is not None:
        query = query.where(Prompt.decomposition_id == decomposition_id)
    if owner is not None:
        query = query.where(Prompt.owner_id == (user.id if owner == "me" else int(owner)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Prompt.id.desc()).limit(limit).offset(offset)).all()
    decomps = {d.id: d for d in session.scalars(
        select(Decomposition).where(Decomposition.id.in_({r.decomposition_id for r in rows})))}
    items = [prompt_out(r, tokens, decomps[r.decomposition_id]) for r in rows]
    return PromptPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{prompt_id}", response_model=PromptOut)
def read_prompt(prompt_id: int, user: UserDep, session: SessionDep, tokens: TokCacheDep) -> PromptOut:
    prompt = get_prompt(session, prompt_id)
    return prompt_out(prompt, tokens, get_decomposition(session, prompt.decomposition_id))


@router.delete("/{prompt_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_prompt(prompt_id: int, user: UserDep, session: SessionDep) -> None:
    """Deletes the prompt with its graphs and their interventions (cascade)."""
    prompt = get_prompt(session, prompt_id)
    ensure_owner_or_admin(user, prompt.owner_id, "prompt")
    session.delete(prompt)
    session.commit()
