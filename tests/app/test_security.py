"""Security: every role against every endpoint, CSRF, traversal, oversize uploads, malformed
GeoJSON and SQL-looking names, against a real server (SQLite)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import httpx
import pytest
from shapely.geometry import shape

from .servers import ADMIN, Client
from .test_api import square

# each module starts real servers (uvicorn; PostgreSQL for the API tests): well over 5 s in all
pytestmark = pytest.mark.slow

PASSWORD = "secret-password-1"


@pytest.fixture(scope="module")
def world(sqlite_server):
    """A project with one user per role, plus an outsider; a feature and a task in it."""
    url = sqlite_server.url
    admin = Client(url, *ADMIN)
    p = admin.post("/api/projects", json={"name": f"sec-{uuid.uuid4().hex[:6]}",
                                          "imagery": {"type": "sample"}}).json()
    users = {}
    for role in ("viewer", "annotator", "reviewer", "admin", "outsider"):
        name = f"{role}-{uuid.uuid4().hex[:6]}"
        assert admin.post("/api/users", json={"username": name, "password": PASSWORD}
                          ).status_code == 201
        if role != "outsider":
            assert admin.put(f"/api/projects/{p['id']}/members",
                             json={"username": name, "role": role}).status_code == 204
        users[role] = Client(url, name, PASSWORD)
    c = shape(p["aoi"]).centroid
    feat = admin.post(f"/api/projects/{p['id']}/features",
                      json={"geometry": square(c.x, c.y), "label": "water"}).json()
    task = admin.post(f"/api/projects/{p['id']}/tasks",
                      json={"name": "t", "geometry": square(c.x, c.y, 0.003)}).json()
    # a job that fails at once (one labelled feature is too few to fine-tune on)
    job = admin.post(f"/api/projects/{p['id']}/jobs", json={"kind": "finetune",
                                                            "params": {"encoder": "nano"}}).json()
    return {"url": url, "project": p, "users": users, "admin": admin, "feature": feat,
            "task": task, "centre": (c.x, c.y), "job": job}


RANK = {"outsider": -1, "viewer": 0, "annotator": 1, "reviewer": 2, "admin": 3}


def _requests(w: dict) -> list[tuple[str, str, str, dict]]:
    """(minimum role, method, path, kwargs) for every project endpoint."""
    pid, lon, lat = w["project"]["id"], *w["centre"]
    base = f"/api/projects/{pid}"
    date = "2024-06-15"
    return [
        ("viewer", "GET", base, {}),
        ("viewer", "GET", f"{base}/features", {}),
        ("viewer", "GET", f"{base}/features/export/geojson", {}),
        ("viewer", "GET", f"{base}/tasks", {}),
        ("viewer", "GET", f"{base}/imagery", {}),
        ("viewer", "GET", f"{base}/imagery/point", {"params": {"lon": lon, "lat": lat,
                                                               "date": date}}),
        ("annotator", "POST", f"{base}/features",
         {"json": {"geometry": {"type": "Point", "coordinates": [lon, lat]}, "label": "forest"}}),
        ("annotator", "PUT", f"{base}/features/{{feature}}", {"json": {"label": "bare"}}),
        ("annotator", "PATCH", f"{base}/tasks/{{task}}", {"json": {"status": "in_progress"}}),
        ("reviewer", "POST", f"{base}/tasks/{{task}}/review",
         {"json": {"accept": True, "comment": "ok"}}),
        ("admin", "PATCH", base, {"json": {"model": "allenai/OlmoEarth-v1-Nano"}}),
        ("admin", "POST", f"{base}/tasks", {"json": {"name": "x", "geometry": square(lon, lat)}}),
        ("admin", "PUT", f"{base}/members", {"json": {"username": ADMIN[0], "role": "admin"}}),
        ("admin", "POST", f"{base}/aoi", {"files": {"file": ("a.geojson", json.dumps(
            {"type": "Feature", "geometry": square(lon, lat), "properties": {}}))}}),
        ("viewer", "GET", f"{base}/features/export/gpkg", {}),
        ("viewer", "GET", f"{base}/features/export/studio", {}),
        ("viewer", "GET", f"{base}/jobs", {}),
        ("viewer", "GET", f"{base}/jobs/{w['job']['id']}", {}),
        ("admin", "POST", f"{base}/jobs/{w['job']['id']}/cancel", {}),
        ("admin", "POST", f"{base}/features/import", {"files": {"file": ("l.geojson", json.dumps(
            {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
                "label": "forest"}, "geometry": square(lon, lat)}]}))}}),
    ]


@pytest.mark.parametrize("role", list(RANK))
def test_each_role_against_each_project_endpoint(world, role):
    client = world["users"][role]
    for minimum, method, path, kw in _requests(world):
        kw = json.loads(json.dumps(kw)) if "files" not in kw else kw
        # versioned bodies need the current version: read it fresh (as admin)
        fid, tid = world["feature"]["id"], world["task"]["id"]
        pid = world["project"]["id"]
        if "{feature}" in path:
            cur = next(f for f in world["admin"].get(f"/api/projects/{pid}/features").json()
                       if f["id"] == fid)
            kw["json"]["version"] = cur["version"]
        if "{task}" in path:
            cur = next(t for t in world["admin"].get(f"/api/projects/{pid}/tasks").json()
                       if t["id"] == tid)
            kw["json"]["version"] = cur["version"]
        url = path.replace("{feature}", fid).replace("{task}", str(tid))
        r = client.request(method, url, **kw)
        if RANK[role] < 0:
            assert r.status_code == 404, (role, method, path, r.text)  # hidden from outsiders
        elif RANK[role] < RANK[minimum]:
            assert r.status_code == 403, (role, method, path, r.text)
        else:
            assert r.status_code < 300, (role, method, path, r.status_code, r.text)


def test_site_admin_only_endpoints(world):
    for role in ("viewer", "annotator", "reviewer", "admin"):  # project admins are not site admins
        c = world["users"][role]
        assert c.get("/api/users").status_code == 403
        assert c.post("/api/users", json={"username": "x" + uuid.uuid4().hex[:6],
                                          "password": PASSWORD}).status_code == 403
        assert c.post("/api/projects", json={"name": "nope"}).status_code == 403


def test_unauthenticated_requests_get_401(world):
    anon = httpx.Client(base_url=world["url"])
    pid = world["project"]["id"]
    for method, path in (("GET", "/api/projects"), ("GET", f"/api/projects/{pid}/features"),
                         ("POST", f"/api/projects/{pid}/features"), ("GET", "/api/users")):
        assert anon.request(method, path).status_code == 401


def test_csrf_required_for_cookie_sessions_not_for_tokens(world):
    pid, (lon, lat) = world["project"]["id"], world["centre"]
    body = {"geometry": {"type": "Point", "coordinates": [lon, lat]}, "label": "forest"}
    c = Client(world["url"], *ADMIN)
    no_header = httpx.Client(base_url=world["url"], cookies=c.cookies)
    r = no_header.post(f"/api/projects/{pid}/features", json=body)
    assert r.status_code == 403 and "CSRF" in r.text
    wrong = no_header.post(f"/api/projects/{pid}/features", json=body,
                           headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    token = c.post("/api/auth/tokens", json={"name": "script"}).json()["token"]
    script = httpx.Client(base_url=world["url"], headers={"Authorization": f"Bearer {token}"})
    assert script.post(f"/api/projects/{pid}/features", json=body).status_code == 201
    bad = httpx.Client(base_url=world["url"], headers={"Authorization": "Bearer glt_forged"})
    assert bad.get("/api/projects").status_code == 401


@pytest.mark.parametrize("name", ["../evil.geojson", "..\\evil.geojson", "/etc/passwd.geojson",
                                  "a/b.geojson", ".hidden.geojson", "x\x00.geojson"])
def test_upload_names_with_paths_are_refused(world, sqlite_server, name):
    pid = world["project"]["id"]
    r = world["admin"].post(f"/api/projects/{pid}/aoi", files={"file": (name, b"{}")})
    assert r.status_code in (400, 422), r.text
    assert not (sqlite_server.project.parent / "evil.geojson").exists()


def test_zip_with_traversal_member_is_refused(world, sqlite_server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../escaped.shp", b"x")
    r = world["admin"].post(f"/api/projects/{world['project']['id']}/aoi",
                            files={"file": ("aoi.zip", buf.getvalue())})
    assert r.status_code == 400 and "outside" in r.text
    assert not list(sqlite_server.project.parent.rglob("escaped.shp"))


def test_project_names_cannot_name_paths_and_sql_is_just_text(world, sqlite_server):
    admin = world["admin"]
    for bad in ("../evil", "a/b", "..", "x\\y"):
        r = admin.post("/api/projects", json={"name": bad})
        assert r.status_code == 422, bad
    sql = f"x'); DROP TABLE users; -- {uuid.uuid4().hex[:4]}"
    r = admin.post("/api/projects", json={"name": sql})
    assert r.status_code == 201 and r.json()["name"] == sql
    assert r.json()["slug"].startswith("p-")  # folders are named by a generated slug
    assert admin.get("/api/users").status_code == 200  # the table is still there
    assert sql in [p["name"] for p in admin.get("/api/projects").json()]
    created = [p.name for p in (sqlite_server.project / "projects").iterdir()]
    assert all(n.startswith("p-") for n in created)


def test_oversize_upload_is_refused_with_413(world, sqlite_server):
    big = b"{" + b" " * (3 * 1024 * 1024) + b"}"  # the test server allows 2 MB
    r = world["admin"].post(f"/api/projects/{world['project']['id']}/aoi",
                            files={"file": ("big.geojson", big)})
    assert r.status_code == 413
    uploads = sqlite_server.project / "projects" / world["project"]["slug"] / "uploads"
    assert not any(p.stat().st_size > 2 * 1024 * 1024 for p in uploads.glob("*")) \
        if uploads.exists() else True


@pytest.mark.parametrize("geometry", [
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]},
    {"type": "Polygon", "coordinates": "nope"},
    {"type": "Blob", "coordinates": [1, 2]},
    {"type": "Point", "coordinates": [500000, 5000000]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
])
def test_malformed_geojson_gets_422(world, geometry):
    r = world["admin"].post(f"/api/projects/{world['project']['id']}/features",
                            json={"geometry": geometry, "label": "water"})
    assert r.status_code == 422, r.text


def test_malformed_aoi_file_gets_a_clear_error(world):
    r = world["admin"].post(f"/api/projects/{world['project']['id']}/aoi",
                            files={"file": ("aoi.geojson", b"{not json")})
    assert r.status_code == 400 and "cannot read" in r.text


def test_only_project_admins_add_imagery(world):
    url = f"/api/projects/{world['project']['id']}/imagery"
    form = {"modality": "sentinel1", "date": "2030-01-01", "bands": "vv"}
    for role in ("viewer", "annotator", "reviewer"):
        r = world["users"][role].post(url, data=form, files={"file": ("x.tif", b"II*\x00")})
        assert r.status_code == 403, (role, r.text)
    r = world["users"]["admin"].post(url, data=form, files={"file": ("x.tif", b"II*\x00")})
    assert r.status_code == 422 and "not a GeoTIFF" in r.text  # authorized, then checked
    r = world["users"]["admin"].post(url, data=form, files={"file": ("../x.tif", b"II*\x00")})
    assert r.status_code == 400
