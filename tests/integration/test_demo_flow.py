"""The main command's flow (import -> prompt -> graph) through the client against the real stack.

`spdlab demo` runs exactly `run_demo` on the bundled demo build; here it runs on the research
fixture run, which the import job treats the same way, so the default suite needs no demo build.
"""

from __future__ import annotations

from pathlib import Path

from spdlab.cli.demo import run_demo
from spdlab.client import SpdlabClient

LLAMA_RUN = Path(__file__).parents[1] / "fixtures" / "research_runs" / "llama_mlp_vector"


def test_demo_flow_imports_prompts_and_computes_a_graph(stack, admin_key):
    with SpdlabClient(stack.url, admin_key) as client:
        prompt_id, graph_id = run_demo(client, LLAMA_RUN, "t253 t112 t155 t251 t205")
        view = client.graphs.get(graph_id, edge_limit=5)
        assert view.prompt_id == prompt_id
        assert view.prompt_tokens[:2] == ["t253", " t112"] or view.prompt_tokens[0].strip() == "t253"
        assert view.stats["n_edges_stored"] > 0 and len(view.edges["value"]) == 5
        # running it again reuses the import job, and the stored graph of an identical prompt
        again_prompt, again_graph = run_demo(client, LLAMA_RUN, "t253 t112 t155 t251 t205")
        assert client.graphs.get(again_graph).stats["n_edges_stored"] == view.stats["n_edges_stored"]
