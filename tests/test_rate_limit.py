"""The per-caller rate limit: beyond it, 429 with Retry-After, for that caller only."""

from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from harness.world import make_tenant


def test_a_caller_over_the_limit_gets_429_and_others_do_not(db, tmp_path):
    tenant = make_tenant(db.sessions)
    settings = Settings(database_url=db.url, data_dir=tmp_path, rate_limit_per_minute=3, temporal_address="127.0.0.1:1")
    with TestClient(create_app(settings)) as client:
        answers = [client.get("/api/v1/me", headers=tenant.cad.headers) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        limited = next(a for a in answers if a.status_code == 429)
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert "more than 3 calls in a minute" in limited.json()["detail"]
        assert client.get("/api/v1/me", headers=tenant.it.headers).status_code == 200
        assert client.get("/api/v1/healthz").status_code == 200  # no caller, no limit
