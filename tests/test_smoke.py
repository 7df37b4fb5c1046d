def test_me(api, tenant):
    r = api.get("/me", headers=tenant.cad.headers)
    assert r.status_code == 200
    assert r.json()["email"] == tenant.cad.email
