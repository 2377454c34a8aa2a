"""Credentials in URLs never reach a log line or an error: `redact` is what every message uses."""

from __future__ import annotations

import pytest

from edgewave.serving.redact import redact


@pytest.mark.parametrize(("text", "secret", "kept"), [
    ("https://x-access-token:ghp_s3cr3t@github.com/plant/desired.git", "ghp_s3cr3t", "github.com/plant/desired.git"),
    ("https://glpat-s3cr3t@gitlab.example/plant/desired.git", "glpat-s3cr3t", "gitlab.example/plant/desired.git"),
    ("sftp://site-a:pa55word@127.0.0.1:2222/samples", "pa55word", "sftp://site-a:***@127.0.0.1:2222"),
    ("s3://bucket/w.parquet?X-Amz-Signature=abcdef&X-Amz-Date=1", "abcdef", "X-Amz-Date=1"),
    ("git fetch failed: fatal: unable to access 'https://u:tok3n@h/r.git/'", "tok3n", "unable to access"),
    ("oci://user:hunter2@127.0.0.1:5000/bundles/m@sha256:ab", "hunter2", "127.0.0.1:5000/bundles/m@sha256:ab"),
])
def test_secrets_in_urls_are_replaced_and_the_rest_kept(text: str, secret: str, kept: str) -> None:
    shown = redact(text)
    assert secret not in shown and "***" in shown
    assert kept in shown


@pytest.mark.parametrize("text", ["ssh://git@127.0.0.1:2222/srv/desired.git", "file:///var/lib/edgewave/bundles",
                                  "http://127.0.0.1:5050", "plain text with no URL"])
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text
