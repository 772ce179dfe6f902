"""Prompts through the API: text or token ids, validation 422s naming the problem, list, cascade delete."""

from __future__ import annotations

from graph_helpers import create_prompt, import_llama


def test_prompt_from_text_and_from_ids(api):
    dec = import_llama(api)
    assert dec["summary"]["vocab_size"] == 256 and dec["summary"]["n_ctx"] == 32
    assert {layer["canonical"] for layer in dec["summary"]["layers"]} >= {"0.mlp.up", "1.attn.o"}
    resp = api.post("/api/v1/prompts", json={"decomposition_id": dec["id"], "text": "t5 t17 t200"})
    assert resp.status_code == 201, resp.text
    from_text = resp.json()
    assert from_text["token_ids"] == [5, 17, 200]
    # each token shows what it adds to the decoded text, as the research app displays it
    assert from_text["tokens"] == ["t5", " t17", " t200"]
    from_ids = create_prompt(api, dec["id"], [5, 17, 200])
    assert from_ids["text"].split() == ["t5", "t17", "t200"]
    got = api.get(f"/api/v1/prompts/{from_ids['id']}").json()
    assert got["token_ids"] == [5, 17, 200]
    listed = api.get("/api/v1/prompts", params={"decomposition_id": dec["id"]}).json()
    assert {from_text["id"], from_ids["id"]} <= {p["id"] for p in listed["items"]}


def test_prompt_validation_names_the_problem(api):
    dec = import_llama(api)

    def post(**body):
        return api.post("/api/v1/prompts", json={"decomposition_id": dec["id"], **body})

    empty = post(text="   ")
    assert empty.status_code == 422 and "text" in empty.json()["detail"] and "empty" in empty.json()["detail"]
    long = post(token_ids=list(range(40)))
    assert long.status_code == 422
    assert "40 tokens" in long.json()["detail"] and "context length is 32" in long.json()["detail"]
    unknown = post(token_ids=[1, 256, 2, 9999, -3])
    assert unknown.status_code == 422
    detail = unknown.json()["detail"]
    assert "3 unknown token id(s)" in detail and all(str(i) in detail for i in (256, 9999, -3))
    both = post(text="t1", token_ids=[1])
    assert both.status_code == 422
    assert post(token_ids=[]).status_code == 422
    assert api.post("/api/v1/prompts", json={"decomposition_id": 999999, "token_ids": [1]}).status_code == 404


def test_delete_prompt_cascades_to_graphs(api, make_user):
    dec = import_llama(api)
    prompt = create_prompt(api, dec["id"], [3, 4])
    _, other = make_user()
    assert other.delete(f"/api/v1/prompts/{prompt['id']}").status_code == 403
    assert api.delete(f"/api/v1/prompts/{prompt['id']}").status_code == 204
    assert api.get(f"/api/v1/prompts/{prompt['id']}").status_code == 404
    assert api.get(f"/api/v1/prompts/{prompt['id']}/graphs").status_code == 404
