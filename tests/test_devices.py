"""Devices: the credential and its verifiers, the in-memory registry and its changes, the store
follower, and the RTSP authorizer's device paths (Digest against HA1, Basic, ?token=) beside the
HMAC tokens that keep working."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from pathlib import Path

import pytest

from camflow.devices import Device, DeviceChange, DeviceRefused, DeviceRegistry, Seen, SeenWriter, digest_ha1
from camflow.devices.model import DeviceError, credential_device, decode, encode
from camflow.devices.store import StoreDevices
from camflow.errors import ConfigError, StoreUnavailable
from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from ingest.service import device_authorizer, token_authorizer
from ingest.sources.rtsp.auth import REALM, AuthScheme, DigestNonces
from ingest.sources.rtsp.headers import DigestCredentials, digest_response
from ingest.sources.rtsp.session import AuthRequest, DeviceGrant

SIGNER = TokenSigner(b"devices-test-secret-0123456789")
BOTH = (AuthScheme.DIGEST, AuthScheme.BASIC)


def tampered(credential: str) -> str:
    """The credential with its last character changed (never to itself)."""
    return credential[:-1] + ("B" if credential.endswith("A") else "A")


def loaded(*devices: Device) -> DeviceRegistry:
    registry = DeviceRegistry()
    registry.replace({d.name: d for d in devices})
    registry.loaded.set()
    return registry


# --- the model ------------------------------------------------------------------------------


def test_credential_names_its_device_and_only_verifiers_are_kept() -> None:
    device, credential = Device.create("cam7", (), now=100.0)
    prefix, name, secret = credential.split(".")
    assert (prefix, name) == ("cfd1", "cam7") and len(secret) >= 43  # 32 random bytes, base64url
    assert credential_device(credential) == "cam7"
    assert device.streams == ("cam7",) and device.created == 100.0  # default: the stream of its own name
    assert (
        device.ha1
        == hashlib.md5(f"cam7:camflow:{credential}".encode()).hexdigest()
        == digest_ha1("cam7", credential)
    )
    assert device.secret_hash == hashlib.sha256(credential.encode()).hexdigest()
    assert secret not in encode(device).decode() and credential not in repr(device)
    assert device.holds(credential) and not device.holds(credential + "x")
    assert Device.create("cam7", (), now=0)[1] != credential  # random every time


def test_revoked_device_keeps_its_facts_but_no_verifier() -> None:
    device, credential = Device.create("cam7", ("a", "b"), now=1.0)
    revoked = device.revoke(now=5.0)
    assert (revoked.ha1, revoked.secret_hash, revoked.revoked, revoked.streams) == ("", "", 5.0, ("a", "b"))
    assert not revoked.holds(credential)
    assert revoked.refusal("a") == "device 'cam7' is revoked"
    assert device.refusal("c") == "device 'cam7' may publish a, b, not 'c'" and device.refusal("b") is None


def test_records_round_trip_and_bad_ones_are_named() -> None:
    device, _ = Device.create("cam7", ("x",), now=1.5)
    assert decode(Device, encode(device)) == device
    seen = Seen("cam7", 2.5, "10.0.0.7")
    assert decode(Seen, encode(seen)) == seen
    with pytest.raises(DeviceError, match='"v": 1'):
        decode(Device, b'{"name": "cam7"}')
    with pytest.raises(DeviceError, match="malformed"):
        decode(Device, b'{"v": 1, "name": "cam7"}')
    with pytest.raises(DeviceError, match="not a device name"):
        decode(Seen, b'{"v": 1, "name": "../x", "at": 1, "address": ""}')


@pytest.mark.parametrize(
    "text", ["v1.abc.def", "cfd1.cam7", "cfd1..s", "cfd1.bad/name.s", "cfd1.cam7.", "cfd1.é.s"]
)
def test_malformed_credentials_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(DeviceError) as info:
        credential_device(text)
    assert text not in str(info.value)


def test_bad_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="stream name"):
        Device.create("no/slash", (), now=0)
    with pytest.raises(ConfigError, match="stream name"):
        Device.create("cam7", ("bad stream",), now=0)


# --- the registry -------------------------------------------------------------------------------


def test_check_credential_answers_every_case() -> None:
    cam7, cred7 = Device.create("cam7", ("cam7", "lobby"), now=0)
    gone, cred_gone = Device.create("gone", (), now=0)
    registry = DeviceRegistry()
    with pytest.raises(DeviceRefused, match="not loaded"):
        registry.check_credential(cred7, "cam7")  # fail closed until the backend was read
    registry = loaded(cam7, gone.revoke(1.0))
    assert registry.check_credential(cred7, "lobby") is cam7
    for credential, stream, why in [
        (cred7, "other", "may publish cam7, lobby, not 'other'"),
        (tampered(cred7), "cam7", "does not match"),
        (cred_gone, "gone", "revoked"),
        (cred7.replace("cam7", "cam9", 1), "cam7", "no device 'cam9'"),
    ]:
        with pytest.raises(DeviceRefused, match=why) as info:
            registry.check_credential(credential, stream)
        assert credential.split(".")[2] not in str(info.value)


def test_changes_name_what_a_device_lost() -> None:
    cam7, _ = Device.create("cam7", ("a", "b"), now=0)
    registry = loaded(cam7)
    heard: list[DeviceChange] = []
    registry.listen(heard.append)
    registry.apply("cam7", cam7.with_streams(("a", "c")))
    registry.apply("cam7", cam7.with_streams(("a", "c")))  # no change: nothing heard
    other, _ = Device.create("new", (), now=0)
    registry.apply("new", other)  # a new device lost nothing
    registry.apply("cam7", registry.get("cam7").revoke(3.0))  # type: ignore[union-attr]
    registry.apply("cam7", None)  # removing a revoked device ends nothing more
    registry.replace({})  # "new" removed
    replaced, _ = Device.create("again", (), now=0)
    registry.apply("again", replaced)
    registry.apply("again", Device.create("again", (), now=0)[0])  # same name, new credential
    assert heard == [
        DeviceChange("cam7", frozenset({"a", "c"}), "stream(s) b removed"),
        DeviceChange("cam7", frozenset(), "device revoked"),
        DeviceChange("new", frozenset(), "device removed"),
        DeviceChange("again", frozenset(), "device credential replaced"),
    ]
    assert len(registry) == 1


async def test_seen_is_written_at_most_once_per_interval_unless_the_address_changes() -> None:
    written: list[Seen] = []
    now = [1000.0]

    async def write(seen: Seen) -> None:
        written.append(seen)
        if seen.address == "boom":
            raise OSError("store down")

    seen = SeenWriter(write, interval=30.0, clock=lambda: now[0])
    assert seen.note("cam7", "10.0.0.7") == Seen("cam7", 1000.0, "10.0.0.7")
    now[0] += 10
    assert seen.note("cam7", "10.0.0.7") is None
    assert seen.note("cam7", "10.0.0.8") is not None  # moved: written at once
    now[0] += 31
    assert seen.note("cam7", "10.0.0.8") is not None
    assert seen.note("cam8", "boom") is not None  # a failed write is logged, not raised
    await seen.close()
    hung = SeenWriter(lambda seen: asyncio.sleep(3600), clock=lambda: now[0])  # a backend that never answers
    hung.note("cam7", "10.0.0.7")
    await asyncio.wait_for(hung.close(wait=0.1), 2)
    assert [(s.name, s.address) for s in written] == [
        ("cam7", "10.0.0.7"),
        ("cam7", "10.0.0.8"),
        ("cam7", "10.0.0.8"),
        ("cam8", "boom"),
    ]


# --- the store backend ------------------------------------------------------------------------


async def test_store_follower_sees_a_revocation_within_its_interval(tmp_path: Path) -> None:
    writer, follower = StoreDevices(FileStore(tmp_path)), StoreDevices(FileStore(tmp_path), interval=0.1)
    await writer.start()
    registry = DeviceRegistry()
    heard: list[DeviceChange] = []
    registry.listen(heard.append)
    task = asyncio.create_task(follower.follow(registry))
    try:
        await asyncio.wait_for(registry.loaded.wait(), 5)
        assert len(registry) == 0  # nothing written yet: loaded, empty
        device, credential = Device.create("cam7", (), now=1.0)
        await writer.put(device)
        for _ in range(50):
            if registry.get("cam7") is not None:
                break
            await asyncio.sleep(0.05)
        assert registry.check_credential(credential, "cam7") == device
        await writer.put(device.revoke(2.0))
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.05)
        assert heard == [DeviceChange("cam7", frozenset(), "device revoked")]
        await writer.put_seen(Seen("cam7", 3.0, "10.0.0.7"))
        assert await writer.seen() == {"cam7": Seen("cam7", 3.0, "10.0.0.7")}
        await writer.remove("cam7")
        assert await writer.devices() == {} and await writer.seen() == {}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class DownStore(FileStore):
    """A store that does not answer (S3 down)."""

    async def get(self, key: str) -> bytes:
        raise StoreUnavailable(f"connection refused getting {key!r}")


async def test_unavailable_store_leaves_the_registry_unloaded(tmp_path: Path) -> None:
    registry = DeviceRegistry()
    task = asyncio.create_task(StoreDevices(DownStore(tmp_path), interval=0.05).follow(registry))
    await asyncio.sleep(0.3)
    assert not task.done() and not registry.loaded.is_set()  # no crash; device credentials refused
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- the RTSP authorizer ----------------------------------------------------------------------


def digest_header(
    user: str, password: str, stream: str, nonce: str, method: str = "ANNOUNCE"
) -> DigestCredentials:
    """What ffmpeg or GStreamer send: the RFC 2617 response computed from the password, as a client does."""
    uri = f"rtsp://127.0.0.1:8554/{stream}"
    response = digest_response(
        username=user, password=password, realm=REALM, method=method, uri=uri, nonce=nonce
    )
    return DigestCredentials(user, REALM, nonce, uri, response, "MD5")


def test_rtsp_authorizer_device_paths_and_hmac_tokens_side_by_side() -> None:
    cam7, cred7 = Device.create("cam7", ("cam7", "lobby"), now=0)
    old, cred_old = Device.create("old", (), now=0)
    registry = loaded(cam7, old.revoke(1.0))
    nonces = DigestNonces(SIGNER.derive_key("rtsp-digest-nonce"))
    authorize = device_authorizer(token_authorizer(SIGNER, BOTH, nonces), registry, None, BOTH, nonces)
    nonce = nonces.issue()

    def digest(user: str, password: str, stream: str) -> bool | DeviceGrant:
        creds = digest_header(user, password, stream, nonce)
        return authorize(AuthRequest(stream, {}, None, None, "ANNOUNCE", creds))

    assert digest("cam7", cred7, "cam7") == DeviceGrant("cam7")  # user = device = stream
    assert digest("cam7", cred7, "lobby") == DeviceGrant("cam7")  # user = device, another of its streams
    assert digest("cam7", cred7, "other") is False  # not its stream
    assert digest("cam7", tampered(cred7), "lobby") is False
    assert digest("old", cred_old, "old") is False  # revoked
    assert digest("nobody", cred7, "cam7") is False
    permanent = SIGNER.issue("cam7", Action.PUBLISH, None)
    assert digest("cam7", permanent, "cam7") is True  # the stream's permanent HMAC token still works
    assert authorize(AuthRequest("lobby", {"token": cred7}, None, None)) == DeviceGrant("cam7")
    assert authorize(AuthRequest("lobby", {}, "cam7", cred7)) == DeviceGrant("cam7")  # Basic
    assert authorize(AuthRequest("lobby", {}, "lobby", cred7)) is False  # Basic: user = the device name
    assert authorize(AuthRequest("lobby", {}, None, cred7)) is False
    assert authorize(AuthRequest("x", {"token": cred7}, None, None)) is False
    assert authorize(AuthRequest("x", {"token": SIGNER.issue("x", Action.PUBLISH, 60)}, None, None)) is True
    basic_off = device_authorizer(
        token_authorizer(SIGNER, BOTH[:1], nonces), registry, None, BOTH[:1], nonces
    )
    assert basic_off(AuthRequest("lobby", {}, "cam7", cred7)) is False  # --rtsp-auth digest refuses Basic


def test_rtsp_authorizer_fails_closed_for_devices_until_loaded() -> None:
    cam7, cred7 = Device.create("cam7", (), now=0)
    registry = DeviceRegistry()
    registry.replace({"cam7": cam7})  # read partly: not loaded
    nonces = DigestNonces(SIGNER.derive_key("rtsp-digest-nonce"))
    authorize = device_authorizer(token_authorizer(SIGNER, BOTH, nonces), registry, None, BOTH, nonces)
    assert authorize(AuthRequest("cam7", {"token": cred7}, None, None)) is False
    creds = digest_header("cam7", cred7, "cam7", nonces.issue())
    assert authorize(AuthRequest("cam7", {}, None, None, "ANNOUNCE", creds)) is False
    token = SIGNER.issue("cam7", Action.PUBLISH, 60)
    assert authorize(AuthRequest("cam7", {"token": token}, None, None)) is True  # HMAC tokens work


# --- the Kafka backend --------------------------------------------------------------------------


async def test_kafka_follower_applies_the_topic_whole_then_follows_it() -> None:
    """A record a later one replaced (not compacted away yet) is never in force on a node that
    (re)reads the topic: the first read is applied at once; later records one by one."""
    from camflow.devices.kafka import KafkaDevices
    from tests import services

    bootstrap = services.require("kafka")
    writer = KafkaDevices(bootstrap, prefix=f"dv{uuid.uuid4().hex[:10]}.")
    await writer.start()
    registry = DeviceRegistry()
    heard: list[DeviceChange] = []
    registry.listen(heard.append)
    task: asyncio.Task[None] | None = None
    try:
        old, _ = Device.create("cam7", (), now=1.0)
        await writer.put(old)
        await writer.put(old.revoke(2.0))
        live, credential = Device.create("live", ("x", "y"), now=3.0)
        await writer.put(live)
        task = asyncio.create_task(writer.follow(registry))
        await asyncio.wait_for(registry.loaded.wait(), 20)
        assert registry.get("cam7") == old.revoke(2.0) and registry.check_credential(credential, "y") == live
        assert heard == []  # cam7's first record never was in force: nothing to take back
        await writer.put(live.with_streams(("x",)))
        await writer.remove("cam7")
        for _ in range(100):
            if heard and registry.get("cam7") is None:
                break
            await asyncio.sleep(0.05)
        assert heard == [DeviceChange("live", frozenset({"x"}), "stream(s) y removed")]
        assert set(await writer.devices()) == {"live"}
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await writer.close()
