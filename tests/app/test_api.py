"""API tests against a real server (uvicorn subprocess on loopback) on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import numpy as np
import pytest
from shapely.geometry import shape

from .servers import ADMIN, Client

# each module starts real servers (uvicorn; PostgreSQL for the API tests): well over 5 s in all
pytestmark = pytest.mark.slow


def square(cx: float, cy: float, d: float = 0.001) -> dict:
    return {"type": "Polygon", "coordinates": [[[cx - d, cy - d], [cx + d, cy - d],
                                                [cx + d, cy + d], [cx - d, cy + d],
                                                [cx - d, cy - d]]]}


def centre(project: dict) -> tuple[float, float]:
    c = shape(project["aoi"]).centroid
    return c.x, c.y


def test_login_sets_httponly_samesite_session_cookie(server):
    with Client(server.url) as c:
        r = c.post("/api/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        assert r.status_code == 200
        cookies = [v for k, v in r.headers.multi_items() if k == "set-cookie"]
        session = next(v for v in cookies if v.startswith("gl_session="))
        csrf = next(v for v in cookies if v.startswith("gl_csrf="))
        assert "HttpOnly" in session and "SameSite=strict" in session
        assert "HttpOnly" not in csrf
        assert c.get("/api/auth/me").json()["username"] == ADMIN[0]
        bad = c.post("/api/auth/login", json={"username": ADMIN[0], "password": "nope"})
        assert bad.status_code == 401


def test_sample_project_has_imagery_tiles_and_pixel_values(server, sample_project, admin):
    pid = sample_project["id"]
    assert sample_project["start_date"] == "2024-01-01"
    assert [c["value"] for c in sample_project["label_schema"]["classes"]][:2] == [
        "water", "forest"]
    index = admin.get(f"/api/projects/{pid}/imagery").json()
    dates = index["scenes"]["sentinel2_l2a"]
    assert len(dates) == 12
    assert set(index["presets"]) == {"true_color", "false_color", "sar", "sar_vv"}
    import morecantile

    lon, lat = centre(sample_project)
    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 15)
    for preset in ("true_color", "false_color", "sar"):
        r = admin.get(f"/api/projects/{pid}/imagery/tiles/{preset}/{dates[6]}/{t.z}/{t.x}/{t.y}"
                      ".png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        from PIL import Image

        img = np.asarray(Image.open(io.BytesIO(r.content)))
        assert img.shape == (256, 256, 4)
        assert img[..., 3].any() and img[..., :3].std() > 0  # real, varying pixels
    far = admin.get(f"/api/projects/{pid}/imagery/tiles/true_color/{dates[0]}/15/0/0.png")
    assert far.status_code == 204
    pt = admin.get(f"/api/projects/{pid}/imagery/point",
                   params={"lon": lon, "lat": lat, "date": dates[6]}).json()
    assert set(pt["values"]) >= {"B02", "B03", "B04", "B08"}
    assert all(v is None or v > 0 for v in pt["values"].values())


def test_versioned_update_second_writer_gets_409(server, sample_project):
    pid = sample_project["id"]
    lon, lat = centre(sample_project)
    with Client(server.url, *ADMIN) as a, Client(server.url, *ADMIN) as b:
        f = a.post(f"/api/projects/{pid}/features",
                   json={"geometry": square(lon, lat), "label": "water"}).json()
        assert f["version"] == 1
        r1 = a.put(f"/api/projects/{pid}/features/{f['id']}",
                   json={"version": 1, "label": "forest"})
        assert r1.status_code == 200 and r1.json()["version"] == 2
        r2 = b.put(f"/api/projects/{pid}/features/{f['id']}",
                   json={"version": 1, "label": "cropland"})
        assert r2.status_code == 409
        assert r2.json()["current"]["label"] == "forest"  # the first edit is kept and shown
        stale_delete = b.delete(f"/api/projects/{pid}/features/{f['id']}", params={"version": 1})
        assert stale_delete.status_code == 409
        ok = b.delete(f"/api/projects/{pid}/features/{f['id']}", params={"version": 2})
        assert ok.status_code == 204
        late = a.put(f"/api/projects/{pid}/features/{f['id']}",
                     json={"version": 2, "label": "bare"})
        assert late.status_code in (404, 409)


def test_retried_create_with_same_id_makes_no_duplicate(server, sample_project, admin):
    pid = sample_project["id"]
    lon, lat = centre(sample_project)
    fid = str(uuid.uuid4())
    body = {"id": fid, "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "label": "forest"}
    assert admin.post(f"/api/projects/{pid}/features", json=body).status_code == 201
    again = admin.post(f"/api/projects/{pid}/features", json=body)
    assert again.status_code == 409 and again.json()["current"]["id"] == fid
    ids = [f["id"] for f in admin.get(f"/api/projects/{pid}/features").json()]
    assert ids.count(fid) == 1


def test_label_must_be_a_class_of_the_schema(server, sample_project, admin):
    pid = sample_project["id"]
    lon, lat = centre(sample_project)
    r = admin.post(f"/api/projects/{pid}/features",
                   json={"geometry": square(lon, lat), "label": "lava"})
    assert r.status_code == 422 and "not a class" in r.text


def test_export_geojson_gpkg_studio_read_back_with_read_labels(server, admin, tmp_path):
    from geolatent.platform import read_labels

    p = admin.post("/api/projects", json={"name": f"exp-{uuid.uuid4().hex[:6]}",
                                          "imagery": {"type": "sample"}}).json()
    pid = p["id"]
    lon, lat = centre(p)
    task = admin.post(f"/api/projects/{pid}/tasks", json={
        "name": "t1", "geometry": square(lon, lat, 0.004), "start_date": "2024-03-01",
        "end_date": "2024-09-30"}).json()
    made = {}
    for i, cls in enumerate(["water", "forest", "cropland"]):
        f = admin.post(f"/api/projects/{pid}/features", json={
            "geometry": square(lon + i * 0.001, lat, 0.0004), "label": cls,
            "task_id": task["id"]}).json()
        made[cls] = f
    gj = admin.get(f"/api/projects/{pid}/features/export/geojson")
    (tmp_path / "l.geojson").write_bytes(gj.content)
    gp = admin.get(f"/api/projects/{pid}/features/export/gpkg")
    (tmp_path / "l.gpkg").write_bytes(gp.content)
    st = admin.get(f"/api/projects/{pid}/features/export/studio")
    zipfile.ZipFile(io.BytesIO(st.content)).extractall(tmp_path / "studio")
    for path, kw in ((tmp_path / "l.geojson", {"field": "label"}),
                     (tmp_path / "l.gpkg", {"field": "label"}),
                     (tmp_path / "studio", {})):
        labels = read_labels(path, **kw)
        assert sorted(map(str, labels.values)) == ["cropland", "forest", "water"], path
        g = labels.geometries[list(map(str, labels.values)).index("forest")]
        assert g.equals_exact(shape(made["forest"]["geometry"]), 1e-9)
    studio = read_labels(tmp_path / "studio")
    assert str(studio.start[0])[:10] == "2024-03-01"  # task times carried by the Studio format

    # import the Studio export into a second project: the same labels come back
    q = admin.post("/api/projects", json={"name": f"imp-{uuid.uuid4().hex[:6]}",
                                          "imagery": {"type": "sample"}}).json()
    r = admin.post(f"/api/projects/{q['id']}/features/import",
                   files={"file": ("studio.zip", st.content, "application/zip")})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 3
    back = admin.get(f"/api/projects/{q['id']}/features").json()
    assert sorted(f["label"] for f in back) == ["cropland", "forest", "water"]


@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "shp.zip", "kml"])
def test_aoi_upload_formats(server, admin, sample_project, tmp_path, fmt):
    import pyogrio.raw
    import shapely

    geom = shape(square(14.5, 45.9, 0.01))
    drivers = {"geojson": "GeoJSON", "gpkg": "GPKG", "shp.zip": "ESRI Shapefile", "kml": "KML"}
    out = tmp_path / ("aoi.shp" if fmt == "shp.zip" else f"aoi.{fmt}")
    pyogrio.raw.write(out, shapely.to_wkb(np.array([geom])), [np.array(["a"], dtype=object)],
                      ["name"], driver=drivers[fmt], crs="EPSG:4326", geometry_type="Polygon")
    if fmt == "shp.zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for part in tmp_path.glob("aoi.*"):
                zf.write(part, part.name)
        payload, name = buf.getvalue(), "aoi.zip"
    else:
        payload, name = out.read_bytes(), out.name
    r = admin.post(f"/api/projects/{sample_project['id']}/aoi", files={"file": (name, payload)})
    assert r.status_code == 200, r.text
    assert shape(r.json()["aoi"]).symmetric_difference(geom).area < 1e-9


def test_tasks_status_and_review(server, admin, sample_project):
    pid = sample_project["id"]
    lon, lat = centre(sample_project)
    t = admin.post(f"/api/projects/{pid}/tasks", json={
        "name": "review me", "geometry": square(lon, lat), "assignee": ADMIN[0]}).json()
    assert t["status"] == "pending" and t["assignee"] == ADMIN[0]
    t = admin.patch(f"/api/projects/{pid}/tasks/{t['id']}",
                    json={"version": t["version"], "status": "to_be_reviewed"}).json()
    no_comment = admin.post(f"/api/projects/{pid}/tasks/{t['id']}/review",
                            json={"version": t["version"], "accept": False})
    assert no_comment.status_code == 422
    rej = admin.post(f"/api/projects/{pid}/tasks/{t['id']}/review",
                     json={"version": t["version"], "accept": False, "comment": "fix edges"})
    assert rej.json()["status"] == "in_progress" and rej.json()["review_comment"] == "fix edges"
    stale = admin.post(f"/api/projects/{pid}/tasks/{t['id']}/review",
                       json={"version": t["version"], "accept": True})
    assert stale.status_code == 409


def test_openapi_page_lists_every_resource(server):
    spec = json.loads(Client(server.url).get("/api/openapi.json").text)
    tags = {tag for op in spec["paths"].values() for m in op.values() for tag in m["tags"]}
    assert tags >= {"auth", "users", "projects", "features", "tasks", "imagery"}
    assert Client(server.url).get("/api/docs").status_code == 200


def test_upload_real_sentinel1_image_tiles_and_pixel_values(server, admin, real_data):
    """A real Sentinel-1 VV GeoTIFF (Camargue, EPSG:32631, 20 m, no band names) added to a
    project: stored as a COG, the single-band SAR preset renders, pixel values are real dB."""
    import morecantile
    import rasterio
    from pyproj import Transformer

    src_path = (real_data / "s1_spatialist" /
                "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif")
    with rasterio.open(src_path) as src:
        b = src.bounds
        lon, lat = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(
            (b.left + b.right) / 2, (b.top + b.bottom) / 2)
    p = admin.post("/api/projects", json={"name": f"s1-{uuid.uuid4().hex[:6]}",
                                          "imagery": {"type": "local", "path": "imagery"}}).json()
    url = f"/api/projects/{p['id']}/imagery"
    payload = src_path.read_bytes()
    unnamed = admin.post(url, data={"modality": "sentinel1", "date": "2015-03-09"},
                         files={"file": ("vv.tif", payload)})
    assert unnamed.status_code == 422 and "'bands'" in unnamed.text
    r = admin.post(url, data={"modality": "sentinel1", "date": "2015-03-09", "bands": "vv"},
                   files={"file": ("vv.tif", payload)})
    assert r.status_code == 201, r.text
    assert r.json()["scenes"] == {"sentinel1": ["2015-03-09"]}
    assert set(r.json()["presets"]) == {"sar_vv"}  # no VH band: the VV/VH preset is not offered
    again = admin.post(url, data={"modality": "sentinel1", "date": "2015-03-09", "bands": "vv"},
                       files={"file": ("vv.tif", payload)})
    assert again.status_code == 409  # never replaces an image
    bad_date = admin.post(url, data={"modality": "sentinel1", "date": "March", "bands": "vv"},
                          files={"file": ("vv.tif", payload)})
    assert bad_date.status_code == 422
    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 13)
    tile = admin.get(f"{url}/tiles/sar_vv/2015-03-09/{t.z}/{t.x}/{t.y}.png")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    assert admin.get(f"{url}/tiles/sar/2015-03-09/{t.z}/{t.x}/{t.y}.png").status_code == 404
    pt = admin.get(f"{url}/point", params={"lon": lon, "lat": lat, "date": "2015-03-09",
                                           "modality": "sentinel1"}).json()
    assert -40 < pt["values"]["vv"] < 15  # backscatter in dB
    with rasterio.open(src_path) as src:
        to_utm = Transformer.from_crs(4326, src.crs, always_xy=True)
        row, col = src.index(*to_utm.transform(lon, lat))
        assert pt["values"]["vv"] == pytest.approx(float(src.read(1)[row, col]))
