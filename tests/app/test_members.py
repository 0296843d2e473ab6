"""Project members and "my tasks" through the API (what the UI's member and task panels use),
against real servers on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from .servers import ADMIN, Client
from .test_api import centre, square

pytestmark = pytest.mark.slow  # real servers (uvicorn, PostgreSQL)
PASSWORD = "member-password-123"


def new_user(admin: Client) -> Client:
    name = f"u{uuid.uuid4().hex[:8]}"
    assert admin.post("/api/users", json={"username": name, "password": PASSWORD}
                      ).status_code == 201
    c = Client(admin.base_url, name, PASSWORD)
    c.username = name
    return c


def test_members_listed_changed_and_removed_last_admin_kept(server, admin):
    p = admin.post("/api/projects", json={"name": f"members-{uuid.uuid4().hex[:6]}",
                                          "imagery": {"type": "sample"}}).json()
    base = f"/api/projects/{p['id']}/members"
    ann, other = new_user(admin), new_user(admin)
    assert admin.put(base, json={"username": ann.username, "role": "annotator"}
                     ).status_code == 204
    assert admin.put(base, json={"username": other.username, "role": "viewer"}
                     ).status_code == 204
    listed = {m["username"]: m["role"] for m in admin.get(base).json()}
    assert listed == {ADMIN[0]: "admin", ann.username: "annotator", other.username: "viewer"}
    # members see the list; only admins change it
    assert {m["username"] for m in ann.get(base).json()} == set(listed)
    r = ann.delete(f"{base}/{other.username}")
    assert r.status_code == 403 and "admin role" in r.json()["detail"]
    assert admin.delete(f"{base}/{other.username}").status_code == 204
    assert other.get(base).status_code == 404  # no longer a member
    r = admin.delete(f"{base}/{other.username}")
    assert r.status_code == 404 and "not a member" in r.json()["detail"]
    # the last admin cannot be removed; with a second admin it can
    r = admin.delete(f"{base}/{ADMIN[0]}")
    assert r.status_code == 409 and "last admin" in r.json()["detail"]
    r = admin.put(base, json={"username": ADMIN[0], "role": "viewer"})  # nor demoted
    assert r.status_code == 409 and "last admin" in r.json()["detail"]
    assert {m["username"]: m["role"] for m in admin.get(base).json()}[ADMIN[0]] == "admin"
    assert admin.put(base, json={"username": ann.username, "role": "admin"}).status_code == 204
    assert admin.delete(f"{base}/{ADMIN[0]}").status_code == 204
    assert {m["username"]: m["role"] for m in ann.get(base).json()} == {ann.username: "admin"}


def test_my_tasks_lists_the_callers_tasks_in_projects_they_belong_to(server, admin):
    ann = new_user(admin)
    projects = []
    for _ in range(2):
        p = admin.post("/api/projects", json={"name": f"mine-{uuid.uuid4().hex[:6]}",
                                              "imagery": {"type": "sample"}}).json()
        admin.put(f"/api/projects/{p['id']}/members",
                  json={"username": ann.username, "role": "annotator"})
        projects.append(p)
    made = []
    for p, status in zip(projects, ("reviewed", "pending"), strict=True):
        lon, lat = centre(p)
        t = admin.post(f"/api/projects/{p['id']}/tasks", json={
            "name": f"t-{status}", "geometry": square(lon, lat), "assignee": ann.username}).json()
        admin.post(f"/api/projects/{p['id']}/tasks", json={  # not assigned to ann
            "name": "someone else's", "geometry": square(lon, lat)})
        if status != "pending":
            t = admin.patch(f"/api/projects/{p['id']}/tasks/{t['id']}",
                            json={"version": t["version"], "status": status}).json()
        made.append(t)
    mine = ann.get("/api/users/me/tasks").json()
    # open tasks first, each with its project
    assert [(t["id"], t["project_id"], t["status"]) for t in mine] == [
        (made[1]["id"], projects[1]["id"], "pending"),
        (made[0]["id"], projects[0]["id"], "reviewed")]
    assert mine[0]["project_name"] == projects[1]["name"]
    assert new_user(admin).get("/api/users/me/tasks").json() == []  # none assigned to them
    # out of a project, its tasks are no longer listed
    admin.delete(f"/api/projects/{projects[1]['id']}/members/{ann.username}")
    assert [t["id"] for t in ann.get("/api/users/me/tasks").json()] == [made[0]["id"]]
    with Client(server.url) as anonymous:
        assert anonymous.get("/api/users/me/tasks").status_code == 401
