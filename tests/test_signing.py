"""Token signing keys: the forms of a key set, a keys file re-read when it changes, and rotation."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from camflow.errors import ConfigError, TokenError
from camflow.signing import (
    LEGACY_KID,
    MAX_KEYS,
    KeySet,
    KeysFile,
    SigningKey,
    parse_env,
    parse_file,
    read_file,
    write_file,
)
from camflow.tokens import Action, TokenExpired, TokenKeyRetired, TokenSigner

OLD = b"old-secret-0123456789abcdef"
NEW = b"new-secret-0123456789abcdef"
NOW = 1_795_256_100.0


def two_keys() -> KeySet:
    return KeySet((SigningKey("k2", NEW), SigningKey("k1", OLD)))


def test_a_plain_secret_is_the_legacy_key_in_every_form() -> None:
    single = KeySet.single(OLD)
    assert single.current == SigningKey(LEGACY_KID, OLD) and single.plain
    assert parse_env(OLD.decode(), "env") == single
    assert parse_file(f"\n{OLD.decode()}\n\n", "file") == single
    assert parse_file(f"# a comment\n{OLD.decode()}\n", "file") == single


def test_key_lists_first_is_current_and_retired_keys_keep_their_id() -> None:
    env = parse_env(f"k2:{NEW.decode()}, k1:{OLD.decode()},k0:retired", "env")
    text = f"# keys\nk2 {NEW.decode()}\n\nk1   {OLD.decode()}\nk0 retired\n"
    assert env == parse_file(text, "file") == KeySet(two_keys().keys, ("k0",))
    assert env.current.kid == "k2" and env.kids() == ["k2", "k1"]
    # A file holding the variable's form (a Secret made for CAMFLOW_SECRET, now mounted as a file).
    assert parse_file(f"k2:{NEW.decode()},k1:{OLD.decode()},k0:retired\n", "file") == env


BAD_FILES = {
    "three fields": ("k1 a b\nk2 0123456789abcdef0", "3 fields"),
    "short secret": ("k1 short\nk2 0123456789abcdef0", "'k1' is 5 bytes long, expected at least 16"),
    "bad kid": ("k.1 0123456789abcdef0\nk2 0123456789abcdef0", "key id 'k.1' is not valid"),
    "duplicate": ("k1 0123456789abcdef0\nk1 0123456789abcdef1", "'k1' appears twice"),
    "retired only": ("k1 retired", "no key that signs"),
    "empty": ("# nothing\n", "no key that signs"),
    "too many": ("".join(f"k{i} 0123456789abcdef{i}\n" for i in range(MAX_KEYS + 1)), "at most 8"),
}


@pytest.mark.parametrize(("text", "reason"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_keys_files_are_config_errors_naming_the_file(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        parse_file(text, "token keys file 'x'")
    assert "token keys file 'x'" in str(caught.value)
    assert "0123456789abcdef" not in str(caught.value)  # never a secret in an error


def test_env_with_commas_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a list of KID:SECRET"):
        parse_env("plain-secret-with,a-comma-0123", "CAMFLOW_SECRET")


def test_rotation_old_tokens_verify_until_their_key_is_retired() -> None:
    before = TokenSigner(KeySet.single(OLD))
    v1 = before.issue("cam1", Action.VIEW, 600, now=NOW)
    assert v1.startswith("v1.")  # a deployment that never rotated issues what it always did
    rotated = KeySet.single(OLD).added("k2", current=True)
    assert rotated.kids() == ["k2", LEGACY_KID]
    after = TokenSigner(rotated)
    v2 = after.issue("cam1", Action.VIEW, 600, now=NOW)
    assert v2.startswith("v2.k2.")
    for token in (v1, v2):
        assert after.verify(token, "cam1", Action.VIEW, now=NOW).expires == NOW + 600
    retired = TokenSigner(rotated.without(LEGACY_KID))
    retired.verify(v2, "cam1", Action.VIEW, now=NOW)
    with pytest.raises(TokenKeyRetired, match="key 'legacy' was retired"):
        retired.verify(v1, "cam1", Action.VIEW, now=NOW)


def test_a_publish_token_fits_in_the_credentials_ffmpeg_keeps() -> None:
    """FFmpeg's RTSP client keeps 127 characters of ``user:password``: a camera whose URL carries a
    publish token (user = a 16-character stream) must fit, with a key id as ``camflow keys`` makes."""
    signer = TokenSigner(KeySet.single(NEW).added(current=True))
    stream = "entrance-cam-016"
    token = signer.issue(stream, Action.PUBLISH, 3600 * 24 * 365, now=NOW)
    assert token.startswith("v2.") and len(f"{stream}:{token}") <= 127, len(f"{stream}:{token}")
    assert signer.verify(token, stream, Action.PUBLISH, now=NOW).stream == stream


def test_a_retired_kid_is_refused_naming_it() -> None:
    keys = two_keys()
    old = TokenSigner(keys.promoted("k1")).issue("cam1", Action.PUBLISH, 600, now=NOW)
    assert old.startswith("v2.k1.")
    TokenSigner(keys).verify(old, "cam1", Action.PUBLISH, now=NOW)
    with pytest.raises(TokenKeyRetired, match="token key 'k1' was retired"):
        TokenSigner(keys.without("k1")).verify(old, "cam1", Action.PUBLISH, now=NOW)


def test_a_tampered_kid_never_verifies() -> None:
    signer = TokenSigner(two_keys())
    token = signer.issue("cam1", Action.VIEW, 600, now=NOW)
    _, kid, body, sig = token.split(".")
    assert kid == "k2"
    with pytest.raises(TokenError, match="signature does not match"):  # another key of the set
        signer.verify(f"v2.k1.{body}.{sig}", "cam1", Action.VIEW, now=NOW)
    with pytest.raises(TokenError, match="'k9' is not one of this deployment's signing keys"):
        signer.verify(f"v2.k9.{body}.{sig}", "cam1", Action.VIEW, now=NOW)
    with pytest.raises(TokenError, match="key id is malformed"):
        signer.verify(f"v2.k\x00!.{body}.{sig}", "cam1", Action.VIEW, now=NOW)
    with pytest.raises(TokenError, match="no key 'legacy'"):  # a v2 token relabelled v1
        signer.verify(f"v1.{body}.{sig}", "cam1", Action.VIEW, now=NOW)
    with pytest.raises(TokenExpired):
        signer.verify(token, "cam1", Action.VIEW, now=NOW + 601)


def test_permanent_tokens_under_each_key_current_first() -> None:
    keys = KeySet((SigningKey("k2", NEW), SigningKey(LEGACY_KID, OLD)))
    permanent = TokenSigner(keys).permanent_tokens("cam1", Action.PUBLISH)
    assert permanent == [
        TokenSigner(keys).issue("cam1", Action.PUBLISH, None),
        TokenSigner(OLD).issue("cam1", Action.PUBLISH, None),  # the v1 token of before the rotation
    ]


def test_derived_keys_of_every_key_current_first_and_stable_for_the_legacy_key() -> None:
    legacy = TokenSigner(OLD).derive_key("rtsp-digest-nonce")
    rotated = TokenSigner(KeySet.single(OLD).added("k2", current=True))
    derived = rotated.derive_keys("rtsp-digest-nonce")
    assert (
        len(derived) == 2 and derived[1] == legacy and derived[0] == rotated.derive_key("rtsp-digest-nonce")
    )


def test_edits_rotate_promote_retire() -> None:
    keys = KeySet.single(OLD)
    added = keys.added("k2", current=False)
    assert added.kids() == [LEGACY_KID, "k2"]
    promoted = added.promoted("k2")
    assert promoted.kids() == ["k2", LEGACY_KID]
    with pytest.raises(ConfigError, match="current"):
        promoted.without("k2")
    with pytest.raises(ConfigError, match="no key 'k9' to retire"):
        promoted.without("k9")
    retired = promoted.without(LEGACY_KID)
    assert retired.kids() == ["k2"] and retired.retired == (LEGACY_KID,)
    with pytest.raises(ConfigError, match="already retired"):
        retired.without(LEGACY_KID)
    assert parse_file(retired.render_file(), "f") == retired


def test_write_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_file(path, KeySet.single(OLD))
    assert path.read_text() == OLD.decode() + "\n"  # a plain secret stays plain until a rotation
    keys = KeySet.single(OLD).added("k2", current=True)
    write_file(path, keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_file(path) == keys
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_file_is_reread_when_it_changes_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_file(path, KeySet.single(OLD))
    clock = Clock()
    source = KeysFile(path, interval=2.0, clock=clock)
    first = source.keys()
    rotated = first.added("k2", current=True)
    write_file(path, rotated)
    os.utime(path, ns=(1, 1))  # a different stat even within the file system's time resolution
    clock.now += 1.0
    assert source.keys() is first  # not checked yet
    clock.now += 1.0
    assert source.keys() == rotated
    assert source.keys() is source.keys()  # the same object while nothing changes


def test_a_broken_keys_file_keeps_the_last_good_keys(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_file(path, two_keys())
    clock = Clock()
    source = KeysFile(path, interval=0.0, clock=clock)
    path.write_text("k1 short\n")
    assert source.keys() == two_keys()
    path.unlink()
    assert source.keys() == two_keys()
    write_file(path, two_keys().without("k1"))
    assert source.keys().kids() == ["k2"]


def test_a_signer_on_a_keys_file_follows_rotation_and_retirement(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_file(path, KeySet.single(OLD))
    signer = TokenSigner(KeysFile(path, interval=0.0))
    before = signer.issue("cam1", Action.VIEW, 600)
    write_file(path, read_file(path).added("k2", current=True))
    after = signer.issue("cam1", Action.VIEW, 600)
    assert before.startswith("v1.") and after.startswith("v2.k2.")
    signer.verify(before, "cam1", Action.VIEW)
    write_file(path, read_file(path).without(LEGACY_KID))
    with pytest.raises(TokenKeyRetired):
        signer.verify(before, "cam1", Action.VIEW)
    signer.verify(after, "cam1", Action.VIEW)


# --- camflow keys -------------------------------------------------------------------------------


def run_keys(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str]:
    from camflow.cli.main import main

    code = main(["keys", *args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out + err


def test_camflow_keys_rotates_a_plain_secret_and_never_prints_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAMFLOW_SECRET", raising=False)
    monkeypatch.delenv("CAMFLOW_SECRET_FILE", raising=False)
    code, out = run_keys(capsys, tmp_path, "list")
    assert code == 2 and "no keys file" in out
    write_file(tmp_path / "secret", KeySet.single(OLD))
    outputs = []
    for args in (("list",), ("add", "k2"), ("rotate", "k2"), ("rotate",), ("retire", LEGACY_KID), ("list",)):
        code, out = run_keys(capsys, tmp_path, *args)
        assert code == 0, (args, out)
        outputs.append(out)
    assert "legacy" in outputs[0] and "current (signs), v1 tokens" in outputs[0]
    keys = read_file(tmp_path / "secret")
    assert keys.kids()[1] == "k2" and keys.retired == (LEGACY_KID,)
    assert "retired" in outputs[-1] and keys.current.kid in outputs[-1]
    secrets = [OLD.decode(), *(k.secret.decode() for k in keys.keys)]
    assert not any(secret in out for secret in secrets for out in outputs)
    for args in (("retire", keys.current.kid), ("retire",), ("retire", "nope"), ("rotate", "bad.kid")):
        code, out = run_keys(capsys, tmp_path, *args)
        assert code == 2, (args, out)
    with monkeypatch.context() as patch:  # a read-only keys file, as a mounted Kubernetes Secret

        def read_only(path: Path, keys: KeySet) -> None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        patch.setattr("camflow.cli.signing.write_file", read_only)
        code, out = run_keys(capsys, tmp_path, "add")
        assert code == 2 and "Read-only file system" in out and not out.startswith("added")
    monkeypatch.setenv("CAMFLOW_SECRET", f"k9:{NEW.decode()},k8:retired")
    code, out = run_keys(capsys, tmp_path, "list")
    assert code == 0 and "k9" in out and "k8" in out and NEW.decode() not in out
    code, out = run_keys(capsys, tmp_path, "add")
    assert code == 2 and "CAMFLOW_SECRET holds the keys" in out
