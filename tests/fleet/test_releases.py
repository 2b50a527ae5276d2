"""Publishing OTA releases over real HTTP, on SQLite and PostgreSQL: checks, roles, audit, delete."""

import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from fleet.auth.roles import Role
from fleet.ota.releases import Releases
from provisioning import release as release_tool
from tests.fleet.release_kit import TAR, ReleaseFolder, SigningKey
from tests.support.fleet import token_for


def esp32(version: str = "0.2.0", **extra: object) -> ReleaseFolder:
    return ReleaseFolder("esp32", version, {"app.mpy": b"app " + version.encode() * 50,
                                            "roles/light.mpy": b"light role " * 400}, **extra)  # type: ignore[arg-type]


def blobs(root: Path) -> set[str]:
    return {path.name for path in (root / "blobs").rglob("*") if path.is_file()}


async def test_a_signed_release_is_published_listed_audited_and_refused_twice(
        ota_fleet: httpx.AsyncClient, signer: SigningKey, tmp_path: Path) -> None:
    folder = esp32()
    signed = folder.signed(signer)
    response = await ota_fleet.post("/api/releases", content=folder.tar(signed, folder="build/", files_dir=""),
                                    headers=TAR)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "esp32-0.2.0" and body["kind"] == "esp32" and body["classes"] == ["esp32"]
    assert body["meta"] == signed["meta"] and body["sigs"] == signed["sigs"] and body["key_ids"] == [signer.id]
    assert [f["path"] for f in body["files"]] == ["app.mpy", "roles/light.mpy"]
    assert body["total_size"] == sum(len(data) for data in folder.files.values()) and body["deltas"] == []
    assert blobs(tmp_path / "ota") == {hashlib.sha256(data).hexdigest() for data in folder.files.values()}

    listed = (await ota_fleet.get("/api/releases")).json()
    assert [r["name"] for r in listed] == ["esp32-0.2.0"] and "meta" not in listed[0]
    assert (await ota_fleet.get("/api/releases/esp32-0.2.0")).json()["meta"] == signed["meta"]
    assert (await ota_fleet.get("/api/releases/esp32-9.9.9")).status_code == 404

    again = await ota_fleet.post("/api/releases", content=folder.tar(signed), headers=TAR)
    assert again.status_code == 409 and "already published" in again.json()["detail"]
    audit = (await ota_fleet.get("/api/audit")).json()
    published = [e for e in audit if e["action"] == "release.publish"]
    assert len(published) == 1 and published[0]["target"] == "esp32-0.2.0"
    assert published[0]["actor"] == "admin-test" and published[0]["detail"]["keys"] == [signer.id]
    assert any(e["action"] == "release.publish.refused" and e["detail"]["status"] == 409 for e in audit)


async def test_refused_releases_get_a_4xx_that_says_what_is_wrong_and_leave_nothing(
        ota_fleet: httpx.AsyncClient, signer: SigningKey, stranger: SigningKey, tmp_path: Path) -> None:
    folder = esp32("0.3.0")
    good = folder.signed(signer)
    tampered_file = dict(folder.files, **{"roles/light.mpy": b"LIGHT ROLE " * 400})  # same size, other bytes
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        ("unsigned", folder.tar(folder.signed()), TAR, 422, "unsigned"),
        ("unknown key", folder.tar(folder.signed(stranger)), TAR, 422, "unknown_key"),
        ("bad signature", folder.tar({"meta": good["meta"].replace("0.3.0", "0.3.1"), "sigs": good["sigs"]}),
         TAR, 422, "bad_signature"),
        ("tampered file", folder.tar(good, files=tampered_file), TAR, 422, "hash_mismatch"),
        ("truncated file", folder.tar(good, files=dict(folder.files, **{"app.mpy": folder.files["app.mpy"][:-1]})),
         TAR, 422, "size_mismatch"),
        ("missing file", folder.tar(good, files={"app.mpy": folder.files["app.mpy"]}), TAR, 422,
         "files[1] (roles/light.mpy) is not in the upload"),
        ("expired", folder.tar(esp32("0.3.0", expires=1_700_000_000).signed(signer)), TAR, 422, "expired"),
        ("bad metadata", folder.tar(folder.signed(signer, meta='{"type": "ioc-release"}')), TAR, 422, "bad_meta"),
        ("no release.json", folder.tar(None), TAR, 422, "no release.json"),
        ("not a tar", b"just some bytes, not a tar archive" * 20, TAR, 400, "not a tar archive"),
        ("not sent as a tar", folder.tar(good), {"Content-Type": "application/json"}, 415, "application/x-tar"),
        ("over FLEET_OTA_RELEASE_MAX", b"\0" * (1024 * 1024 + 1), TAR, 413, "over the limit"),
    ]
    for what, content, headers, code, says in cases:
        response = await ota_fleet.post("/api/releases", content=content, headers=headers)
        assert response.status_code == code, (what, response.status_code, response.text)
        assert says in response.json()["detail"], (what, response.json())
    assert (await ota_fleet.get("/api/releases")).json() == []
    assert blobs(tmp_path / "ota") == set()
    assert list((tmp_path / "ota" / "tmp").iterdir()) == []
    # a body streamed without a length is counted as it arrives
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"\0" * 65536
    chunked = await ota_fleet.post("/api/releases", content=chunks(), headers=TAR)
    assert chunked.status_code == 413
    # without FLEET_OTA_KEYS nothing is published
    settings = ota_fleet.app.state.runtime.settings  # type: ignore[attr-defined]
    keys, settings.ota_keys = settings.ota_keys, None
    try:
        keyless = await ota_fleet.post("/api/releases", content=folder.tar(good), headers=TAR)
    finally:
        settings.ota_keys = keys
    assert keyless.status_code == 503 and "FLEET_OTA_KEYS" in keyless.json()["detail"]
    # a signature by another key stays (a device may hold it), an entry that is no signature goes
    other = stranger.sign(good["meta"].encode())
    padded = {"meta": good["meta"], "sigs": ["junk", other, *good["sigs"]]}
    published = await ota_fleet.post("/api/releases", content=folder.tar(padded), headers=TAR)
    assert published.status_code == 201, published.text
    assert published.json()["sigs"] == [other, *good["sigs"]] and published.json()["key_ids"] == [signer.id]


async def test_who_may_publish_and_delete(ota_fleet: httpx.AsyncClient, signer: SigningKey,
                                          tmp_path: Path) -> None:
    first, second = esp32("1.0.0"), esp32("1.0.1")
    second.files["roles/light.mpy"] = first.files["roles/light.mpy"]  # a blob both releases share
    as_role = {role: {"Authorization": f"Bearer {await token_for(ota_fleet, role)}", **TAR}
               for role in (Role.OPS, Role.READ_ONLY, Role.TECHNICIAN, Role.IOC_OPERATOR)}
    for role in (Role.READ_ONLY, Role.TECHNICIAN, Role.IOC_OPERATOR):
        refused = await ota_fleet.post("/api/releases", content=first.tar(first.signed(signer)), headers=as_role[role])
        assert refused.status_code == 403 and "releases" in refused.json()["detail"]
    for folder in (first, second):
        made = await ota_fleet.post("/api/releases", content=folder.tar(folder.signed(signer)),
                                    headers=as_role[Role.OPS])
        assert made.status_code == 201, made.text
        assert made.json()["created_by"].startswith("ops-")
    viewer = {"Authorization": as_role[Role.READ_ONLY]["Authorization"]}
    assert [r["name"] for r in (await ota_fleet.get("/api/releases", headers=viewer)).json()] == [
        "esp32-1.0.1", "esp32-1.0.0"]
    ops_delete = await ota_fleet.delete("/api/releases/esp32-1.0.0", headers={
        "Authorization": as_role[Role.OPS]["Authorization"]})
    assert ops_delete.status_code == 403 and "release_delete" in ops_delete.json()["detail"]

    shared = hashlib.sha256(first.files["roles/light.mpy"]).hexdigest()
    assert len(blobs(tmp_path / "ota")) == 3
    deleted = await ota_fleet.delete("/api/releases/esp32-1.0.0")
    assert deleted.status_code == 204
    assert blobs(tmp_path / "ota") == {shared, hashlib.sha256(second.files["app.mpy"]).hexdigest()}
    assert (await ota_fleet.delete("/api/releases/esp32-1.0.0")).status_code == 404
    # a release a rollout names stays, for the rollout's history, even once the rollout ended
    assert (await ota_fleet.post("/api/devices", json={"id": "lamp-r1", "kind": "esp32"})).status_code == 201
    rollout = await ota_fleet.post("/api/rollouts", json={"release": "esp32-1.0.1", "target": {"devices": ["lamp-r1"]}})
    assert rollout.status_code == 201, rollout.text
    in_use = await ota_fleet.delete("/api/releases/esp32-1.0.1")
    assert in_use.status_code == 409 and f"rollout {rollout.json()['id']} (running)" in in_use.json()["detail"]
    await ota_fleet.post(f"/api/rollouts/{rollout.json()['id']}/abort")
    assert (await ota_fleet.delete("/api/releases/esp32-1.0.1")).status_code == 409
    assert len(blobs(tmp_path / "ota")) == 2
    audit = (await ota_fleet.get("/api/audit")).json()
    assert [(e["action"], e["target"]) for e in audit if e["action"] == "release.delete"] == [
        ("release.delete", "esp32-1.0.0")]
    assert sum(1 for e in audit if e["action"] == "release.publish") == 2


async def test_the_releases_service_is_shared_by_the_routes_and_other_parts(ota_fleet: httpx.AsyncClient) -> None:
    """The rollout engine makes its own Releases from the settings: same store, same token secret."""
    app = ota_fleet.app  # type: ignore[attr-defined]
    assert (await ota_fleet.get("/ota/files/" + "0" * 64)).status_code == 403  # no token
    other = Releases(app.state.runtime.settings)
    token, _ = other.token("dev-1", "esp32-1.0.0", 1_800_000_000)
    assert app.state.releases.secret == other.secret and len(other.secret) == 32
    assert token.startswith("dev-1~esp32-1.0.0~")


async def test_a_release_made_by_the_signers_tool_is_published(ota_fleet: httpx.AsyncClient, tmp_path: Path) -> None:
    """provision release keygen / build / sign, the folder tarred as it is: the fleet takes it once it
    holds the key (FLEET_OTA_KEYS is read at every publish), and refuses it before."""
    key = tmp_path / "signer" / "key.pem"
    key.parent.mkdir()
    public, ident = release_tool.keygen(key)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "ioc_edge-0.7.0-py3-none-any.whl").write_bytes(b"not really a wheel " * 100)
    (wheels / "ioc_contract-0.7.0-py3-none-any.whl").write_bytes(b"nor this one " * 100)
    folder, _ = release_tool.build_release(release_tool.BuildRequest(
        kind="pi", version="0.7.0", out=tmp_path / "build", classes=("pi-arm64",), signer=public, wheels=wheels))
    release_tool.sign_release(folder, [key])
    upload = io.BytesIO()
    with tarfile.open(fileobj=upload, mode="w") as tar:
        tar.add(folder, arcname="release-0.7.0")
    refused = await ota_fleet.post("/api/releases", content=upload.getvalue(), headers=TAR)
    assert refused.status_code == 422 and "unknown_key" in refused.json()["detail"]
    keys = ota_fleet.app.state.runtime.settings.ota_keys  # type: ignore[attr-defined]
    keys.write_text(keys.read_text() + public.read_text())
    published = await ota_fleet.post("/api/releases", content=upload.getvalue(), headers=TAR)
    assert published.status_code == 201, published.text
    body = published.json()
    assert body["name"] == "pi-arm64-0.7.0" and body["key_ids"] == [ident]
    assert [f["path"] for f in body["files"]] == ["ioc-edge-0.7.0.tar"]
