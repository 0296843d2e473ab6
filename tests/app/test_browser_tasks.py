"""Browser tests of tasks and membership: an admin adds members and creates, assigns and
reassigns tasks; an annotator finds "my tasks", jumps to one and sends it to review; a
reviewer rejects (a comment is required) and accepts. Playwright drives Debian's chromium
against a real server on loopback; screenshots are saved on failure."""

from __future__ import annotations

import uuid

import pytest
from shapely.geometry import shape

from . import browser as ui
from .browser import browser_fixture  # noqa: F401 (provides the browser fixture)
from .servers import ADMIN, Client

pytestmark = pytest.mark.slow
PASSWORD = "browser-password-123"


def test_tasks_and_members_from_admin_annotator_and_reviewer(browser, sqlite_server, tmp_path):
    url = sqlite_server.url
    api = Client(url, *ADMIN)
    project = api.post("/api/projects", json={"name": f"tasks-{uuid.uuid4().hex[:6]}",
                                               "imagery": {"type": "sample"}}).json()
    pid = project["id"]
    users = {}
    for role in ("annotator", "reviewer", "viewer"):
        name = f"{role[:3]}-{uuid.uuid4().hex[:6]}"
        assert api.post("/api/users", json={"username": name, "password": PASSWORD}
                        ).status_code == 201
        users[role] = name
    ann, rev = users["annotator"], users["reviewer"]
    c = shape(project["aoi"]).centroid
    tasks = lambda: api.get(f"/api/projects/{pid}/tasks").json()  # noqa: E731
    members = lambda: {m["username"]: m["role"] for m in  # noqa: E731
                       api.get(f"/api/projects/{pid}/members").json()}

    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    with ui.screenshot_on_failure(admin, tmp_path, "tasks-admin"):
        ui.login(admin, url)
        admin.goto(f"{url}/#/project/{pid}")
        ui.wait_ready(admin)
        for role, name in users.items():
            admin.fill("#add-member input[name=username]", name)
            admin.select_option("#add-member select[name=role]", role)
            admin.click("#add-member button[type=submit]")
            admin.wait_for_selector(f"#members li[data-member='{name}']")
        assert members() == {ADMIN[0]: "admin", ann: "annotator", rev: "reviewer",
                             users["viewer"]: "viewer"}
        admin.select_option(f"#members li[data-member='{users['viewer']}'] select", "reviewer")
        ui.until(lambda: members()[users["viewer"]] == "reviewer")
        admin.click(f"#members li[data-member='{users['viewer']}'] >> text=Remove")
        admin.wait_for_selector(f"#members li[data-member='{users['viewer']}']", state="detached")
        assert users["viewer"] not in members()
        admin.fill("#add-member input[name=username]", "nobody-at-all")
        admin.click("#add-member button[type=submit]")
        admin.wait_for_selector("#member-error >> text=no user 'nobody-at-all'")
        admin.click(f"#members li[data-member='{ADMIN[0]}'] >> text=Remove")
        admin.wait_for_selector("#member-error >> text=last admin")

        # a task drawn on the map, assigned to the annotator
        admin.fill("#new-task input[name=name]", "block A")
        admin.select_option("#new-task select[name=assignee]", ann)
        admin.click("#task-draw")
        ui.draw_square(admin, c.x, c.y, 0.004)
        ui.wait_js(admin, "document.querySelector('#task-area').textContent === 'drawn area'")
        admin.click("#new-task button[type=submit]")
        admin.wait_for_selector("#tasks li[data-status=pending]")
        # a second one over the whole project area, left unassigned
        admin.fill("#new-task input[name=name]", "whole area")
        admin.select_option("#new-task select[name=assignee]", "")
        admin.click("#task-use-aoi")
        admin.click("#new-task button[type=submit]")
        admin.wait_for_selector("#tasks li >> text=whole area")
        block, whole = tasks()
        assert (block["name"], block["assignee"], block["status"]) == ("block A", ann, "pending")
        assert shape(block["geometry"]).area == pytest.approx(0.008 ** 2, rel=0.05)
        assert (block["start_date"], block["end_date"]) == (project["start_date"],
                                                            project["end_date"])
        assert whole["assignee"] is None
        assert shape(whole["geometry"]).equals(shape(project["aoi"]))
        # drawing a task area never makes a label feature
        assert api.get(f"/api/projects/{pid}/features").json() == []
        # reassign to the reviewer and back
        sel = f"#tasks li[data-task='{block['id']}'] select.task-assignee"
        admin.select_option(sel, rev)
        ui.until(lambda: tasks()[0]["assignee"] == rev)
        admin.wait_for_selector(f"#tasks li[data-task='{block['id']}'] >> text={rev}")
        admin.select_option(sel, ann)
        ui.until(lambda: tasks()[0]["assignee"] == ann)

    annotator = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    with ui.screenshot_on_failure(annotator, tmp_path, "tasks-annotator"):
        ui.login(annotator, url, (ann, PASSWORD))
        link = annotator.locator("#my-tasks a")
        assert link.all_inner_texts() == ["block A"]
        link.click()
        ui.wait_ready(annotator)
        ui.wait_js(annotator, f"__geolatent.focusTask === {block['id']}")
        assert annotator.evaluate(f"__geolatent.map.getBounds().contains([{c.x}, {c.y}])")
        # "only my tasks" is on for annotators: the unassigned task is hidden
        assert annotator.locator("#tasks li").count() == 1
        annotator.uncheck("#my-tasks-only")
        assert annotator.locator("#tasks li").count() == 2
        status = f"#tasks li[data-task='{block['id']}'] select.task-status"
        choices = annotator.locator(f"{status} option").evaluate_all(
            "os => os.map(o => o.value)")
        assert choices == ["pending", "in_progress", "completed", "to_be_reviewed"]
        assert annotator.locator("#tasks select.task-assignee").count() == 0  # admins only
        annotator.select_option(status, "to_be_reviewed")
        ui.until(lambda: tasks()[0]["status"] == "to_be_reviewed")

    reviewer = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    with ui.screenshot_on_failure(reviewer, tmp_path, "tasks-reviewer"):
        ui.login(reviewer, url, (rev, PASSWORD))
        reviewer.goto(f"{url}/#/project/{pid}")
        ui.wait_ready(reviewer)
        item = f"#tasks li[data-task='{block['id']}']"
        reviewer.click(f"{item} >> text=Reject")
        reviewer.wait_for_selector("#task-error >> text=needs a comment")
        assert tasks()[0]["status"] == "to_be_reviewed"
        reviewer.fill(f"{item} input.review-comment", "the river bank is missing")
        reviewer.click(f"{item} >> text=Reject")
        got = ui.until(lambda: (t := tasks()[0])["status"] == "in_progress" and t)
        assert got["review_comment"] == "the river bank is missing"
        reviewer.wait_for_selector(f"{item} >> text=review: the river bank is missing")

    with ui.screenshot_on_failure(annotator, tmp_path, "tasks-annotator-2"):
        annotator.reload()
        ui.wait_ready(annotator)
        annotator.select_option(f"#tasks li[data-task='{block['id']}'] select.task-status",
                                "to_be_reviewed")
        ui.until(lambda: tasks()[0]["status"] == "to_be_reviewed")
    with ui.screenshot_on_failure(reviewer, tmp_path, "tasks-reviewer-2"):
        reviewer.reload()
        ui.wait_ready(reviewer)
        reviewer.click(f"#tasks li[data-task='{block['id']}'] >> text=Accept")
        ui.until(lambda: tasks()[0]["status"] == "reviewed")
        reviewer.wait_for_selector(f"#tasks li[data-task='{block['id']}'][data-status=reviewed]")
    for page in (admin, annotator, reviewer):
        page.context.close()
    api.close()
