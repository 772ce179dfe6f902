"""The dashboard's static files are served without a key; the page itself asks for one."""

from __future__ import annotations

from fastapi.testclient import TestClient

from spdlab.api.main import create_app
from spdlab.common.settings import Settings


def test_dashboard_is_served_and_root_redirects(tmp_path):
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        page = client.get("/ui/")
        assert page.status_code == 200 and "<title>spdlab</title>" in page.text
        script = client.get("/ui/app.js")
        assert script.status_code == 200 and "/api/v1" in script.text
        root = client.get("/", follow_redirects=False)
        assert root.status_code in (302, 307) and root.headers["location"] == "/ui/"
        assert client.get("/ui/missing.js").status_code == 404
