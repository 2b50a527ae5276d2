"""The download tokens (fleet/auth/url_tokens.py): a purpose's domain keeps one kind of token
from opening another's files; the format is the OTA downloads' (fleet/ota/tokens.py) byte for byte,
so those can move onto this module without invalidating a token in flight."""

from pathlib import Path

import pytest
from pydantic import SecretStr

from fleet.auth import url_tokens
from fleet.auth.url_tokens import UrlTokenError, check_token, load_secret, make_token
from fleet.broadcast.library import TOKEN_DOMAIN
from fleet.ota import tokens as ota_tokens

SECRET = b"s" * 32


def test_domains_and_the_ota_format() -> None:
    audio = make_token(SECRET, TOKEN_DOMAIN, "spk-1", "ab" * 32, 2_000_000_000)
    assert check_token(SECRET, TOKEN_DOMAIN, audio, 1_000).subject == "ab" * 32
    with pytest.raises(UrlTokenError, match="not valid"):
        check_token(SECRET, "ioc-ota-download", audio, 1_000)
    ota = ota_tokens.make_token(SECRET, "spk-1", "esp32-0.2.0", 2_000_000_000)
    assert ota == make_token(SECRET, "ioc-ota-download", "spk-1", "esp32-0.2.0", 2_000_000_000)
    with pytest.raises(UrlTokenError, match="not valid"):
        check_token(SECRET, TOKEN_DOMAIN, ota, 1_000)
    with pytest.raises(UrlTokenError, match="expired"):
        check_token(SECRET, TOKEN_DOMAIN, audio, 2_000_000_000)
    with pytest.raises(UrlTokenError, match="malformed"):
        check_token(SECRET, TOKEN_DOMAIN, "x" * (url_tokens.TOKEN_MAX + 1), 1_000)
    with pytest.raises(ValueError, match="'~'"):
        make_token(SECRET, TOKEN_DOMAIN, "spk~1", "x", 1)


def test_the_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = load_secret(None, tmp_path / "audio")
    assert len(first) == 32 and load_secret(None, tmp_path / "audio") == first
    assert (tmp_path / "audio" / "token.key").stat().st_mode & 0o777 == 0o600
    assert load_secret(SecretStr("configured"), tmp_path / "other") == b"configured"
    (tmp_path / "audio" / "token.key").write_bytes(b"short")
    with pytest.raises(ValueError, match="fewer than 32 bytes"):
        load_secret(None, tmp_path / "audio")
