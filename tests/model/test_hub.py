"""Weights by name through huggingface_hub, against a real HTTP server on loopback serving the
fixture folders in the hub's download layout (HF_ENDPOINT pointed at it)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hub_server import HubServer, Repo
from shared_data import SHARED

import geolatent
from geolatent.model.hub import KNOWN_RELEASES, ModelNotAvailable, cached_revisions, resolve_id

REPO = "allenai/OlmoEarth-v1_2-Nano"
MAIN = "a" * 40  # the default branch: the v1.2 Nano fixture
OLD = "b" * 40  # an older commit, tagged "v0": the v1.1 Nano fixture


@pytest.fixture
def folders():
    v12 = SHARED / "fixtures" / "olmoearth_v1_2_nano"
    v11 = SHARED / "fixtures" / "olmoearth_v1_1_nano"
    if not (v12 / "weights.pth").exists() or not (v11 / "weights.pth").exists():
        pytest.skip(f"reference fixtures not found under {SHARED} (set GEOLATENT_SHARED)")
    return v12, v11


@pytest.fixture
def server(folders):
    v12, v11 = folders
    repo = Repo(refs={"main": MAIN, "v0": OLD}, commits={MAIN: v12, OLD: v11})
    with HubServer({REPO: repo}) as srv:
        yield srv


@pytest.fixture
def hf_env(tmp_path, monkeypatch, server):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return tmp_path / "hf"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_first_download_then_cached_with_server_stopped(hf_env, server, folders, monkeypatch):
    model = geolatent.load_model(REPO)
    assert model.config.version == "v1.2"
    prov = model.provenance
    assert prov["repo_id"] == REPO and prov["revision"] == MAIN
    assert prov["sha256"] == _sha256(folders[0] / "weights.pth")
    assert any(r.startswith("GET /allenai/OlmoEarth-v1_2-Nano/resolve/") for r in server.requests)
    assert cached_revisions(REPO) == [MAIN]

    server.stop()
    again = geolatent.load_model("OlmoEarth-v1_2-Nano")  # short form, from the cache
    assert again.provenance["revision"] == MAIN and again.provenance["sha256"] == prov["sha256"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert geolatent.load_model(REPO).provenance["revision"] == MAIN


@pytest.mark.parametrize("revision", [OLD, "v0"])
def test_revision_pin(hf_env, folders, revision):
    model = geolatent.load_model(REPO, revision=revision)
    assert model.config.version == "v1.1"  # the older commit holds another model
    assert model.provenance["revision"] == OLD
    assert model.provenance["requested_revision"] == revision
    assert model.provenance["sha256"] == _sha256(folders[1] / "weights.pth")


@pytest.mark.slow
def test_truncated_download_is_an_error_and_nothing_is_loaded(hf_env, server):
    server.truncate = True
    with pytest.raises(ModelNotAvailable, match="downloading weights.pth .* nothing was loaded"):
        geolatent.load_model(REPO)
    snapshots = list((hf_env / "hub").rglob("snapshots/*/weights.pth"))
    assert snapshots == []  # no half file where a later load would find it
    server.truncate = False
    assert geolatent.load_model(REPO).provenance["revision"] == MAIN  # a retry completes


def test_unknown_id_is_a_404_with_a_clear_error(hf_env):
    with pytest.raises(ModelNotAvailable, match="'allenai/OlmoEarth-v9-Huge' was not found"):
        geolatent.load_model("allenai/OlmoEarth-v9-Huge")


def test_unknown_revision(hf_env):
    with pytest.raises(ModelNotAvailable, match="revision 'nope' of .* does not exist"):
        geolatent.load_model(REPO, revision="nope")


def test_offline_with_nothing_cached_says_how_to_get_the_weights(hf_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable, match="HF_HUB_OFFLINE is set.*huggingface-cli download"):
        geolatent.load_model(REPO)


@pytest.mark.slow  # the hub client retries a refused connection with backoff (~24 s)
def test_server_unreachable_with_nothing_cached(hf_env, server):
    server.stop()
    with pytest.raises(ModelNotAvailable, match="cannot be reached.*never substitutes random"):
        geolatent.load_model(REPO)


def test_ids_and_known_releases():
    assert resolve_id("OlmoEarth-v1_3-Base") == "allenai/OlmoEarth-v1_3-Base"
    assert resolve_id("someone/their-model") == "someone/their-model"
    ids = {r.repo_id: r for r in KNOWN_RELEASES}
    assert ids["allenai/OlmoEarth-v1_2-Small"].embedding_dim == 384
    assert ids["allenai/OlmoEarth-v1_3-Base"].location_embedding_dim == 128
    with pytest.raises(ValueError, match="revision= applies to model ids"):
        geolatent.load_model(SHARED, revision="main")


@pytest.mark.slow
def test_models_command_lists_cached_releases(hf_env):
    from typer.testing import CliRunner

    from geolatent.cli import app

    geolatent.load_model(REPO)
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {json.loads(line)["id"]: json.loads(line) for line in result.stdout.splitlines()}
    assert rows[REPO]["cached_revisions"] == [MAIN]
    assert rows["allenai/OlmoEarth-v1_3-Base"]["cached_revisions"] == []
    assert rows["allenai/OlmoEarth-v1_3-Base"]["location_embedding_dim"] == 128


def test_demo_uses_released_nano_when_reachable_else_says_random(hf_env, server):
    from geolatent.inference.demo import DEMO_RELEASE, RANDOM_WEIGHTS_NOTE, released_demo_model

    assert DEMO_RELEASE == REPO
    server.stop()
    model, note, why = released_demo_model()  # nothing cached, hub unreachable
    assert model is None and note == RANDOM_WEIGHTS_NOTE and "not reachable" in why


def test_demo_downloads_released_nano(hf_env, server):
    from geolatent.inference.demo import released_demo_model

    model, note, why = released_demo_model()
    assert why is None and model.provenance["revision"] == MAIN
    assert note == f"released weights {REPO} @ {MAIN}"
    server.stop()
    assert released_demo_model()[0] is not None  # now from the cache


@pytest.mark.slow
def test_cli_model_flag_takes_an_id(hf_env, tmp_path):
    """Every command's --model goes through load_model: an unknown id is a clear CLI error."""
    from typer.testing import CliRunner

    from geolatent.cli import app

    tif = tmp_path / "s2.tif"
    tif.write_bytes(b"")  # never read: the model is loaded first
    res = CliRunner().invoke(app, ["embed", "--out", str(tmp_path / "o.tif"), "--model",
                                   "allenai/OlmoEarth-v9-Huge", "--s2", str(tif),
                                   "--s2-dates", "2024-01-01"])  # fmt: skip
    assert res.exit_code == 2
    assert "was not found" in " ".join(res.output.split())


def test_archive_build_takes_a_release_id_and_records_it(hf_env, server):
    """``archive build --model ID``: the archive's model identity is the release and commit."""
    from geolatent.archive.build import load_archive_model, model_identity

    ident = model_identity(load_archive_model(REPO))
    assert ident["id"] == REPO and ident["revision"] == MAIN
    with pytest.raises(FileNotFoundError, match="not a release id"):
        load_archive_model(hf_env / "no-such-folder")
