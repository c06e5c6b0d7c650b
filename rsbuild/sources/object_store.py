"""S3-compatible object stores behind ``s3://`` scene hrefs: endpoint, addressing, credentials.

Copernicus Data Space publishes hrefs ``s3://eodata/...`` that live on CDSE's own S3 endpoint
(``https://eodata.dataspace.copernicus.eu``, path-style addressing) and need its S3 keys;
Earth Search and Planetary Computer hrefs are https and need none of this. ``scenes.s3``
(``rsbuild.config.S3Config``, filled by the ``cdse`` preset) says where ``s3://`` hrefs live;
``configure_gdal`` turns it into GDAL's configuration (environment variables GDAL reads on every
request, so reads in any thread of this process see them):

- ``AWS_S3_ENDPOINT`` (host[:port]) and ``AWS_HTTPS`` from the endpoint URL's scheme;
- ``AWS_VIRTUAL_HOSTING``: ``FALSE`` for path-style (``host/bucket/key``, what CDSE and most
  S3-compatible servers want), ``TRUE`` for ``bucket.host/key``;
- ``AWS_NO_SIGN_REQUEST=YES`` only when ``anonymous = true``; otherwise ``NO`` and requests are
  signed with ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` from the environment, or with a
  shared-credentials file (``credentials_file``, AWS INI format, ``profile``) that GDAL reads
  itself through ``AWS_SHARED_CREDENTIALS_FILE`` / ``AWS_PROFILE``.

rsbuild never reads a secret: it only checks that one is available and names the variables
or the file in its messages. Nothing here prints values of the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from rsbuild.errors import ConfigError

KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
CDSE_KEYS_URL = "https://eodata-s3keysmanager.dataspace.copernicus.eu"


class ObjectStoreSettings(Protocol):
    """What ``configure_gdal`` needs (``rsbuild.config.S3Config`` has these fields)."""

    endpoint: str | None
    virtual_hosting: bool
    region: str | None
    anonymous: bool
    credentials_file: str | None
    profile: str | None


def endpoint_host(endpoint: str, field: str = "scenes.s3.endpoint") -> tuple[str, bool]:
    """``(host[:port], https)`` of an endpoint URL such as ``https://eodata.dataspace.copernicus.eu``."""
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path.strip("/"):
        raise ConfigError(f"{field} = {endpoint!r} is not an endpoint URL; write e.g. 'https://eodata.dataspace.copernicus.eu'")
    return parsed.netloc, parsed.scheme == "https"


def credentials_source(settings: ObjectStoreSettings, environ: Mapping[str, str], field: str = "scenes.s3") -> str:
    """Where requests get their keys: 'anonymous', 'environment' or 'file'; ConfigError when nowhere."""
    if settings.anonymous:
        return "anonymous"
    if settings.credentials_file:
        if not Path(settings.credentials_file).expanduser().is_file():
            raise ConfigError(f"{field}.credentials_file = {settings.credentials_file!r} does not exist; "
                              "give the path of an AWS shared-credentials file ([profile] with aws_access_key_id, aws_secret_access_key)")  # fmt: skip
        return "file"
    if all(environ.get(name) for name in KEY_VARIABLES):
        return "environment"
    raise ConfigError(
        f"{field}: the object store at {settings.endpoint or 'AWS S3'} needs credentials: set AWS_ACCESS_KEY_ID and "
        f"AWS_SECRET_ACCESS_KEY (Copernicus Data Space: create S3 keys at {CDSE_KEYS_URL}), or set {field}.credentials_file "
        f"to an AWS shared-credentials file, or {field}.anonymous = true for a public bucket"
    )


def gdal_config(settings: ObjectStoreSettings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """GDAL configuration options for ``s3://`` reads (names and non-secret values only)."""
    environ = os.environ if environ is None else environ
    options: dict[str, str] = {}
    if settings.endpoint:
        host, https = endpoint_host(settings.endpoint)
        options.update(AWS_S3_ENDPOINT=host, AWS_HTTPS="YES" if https else "NO")
    options["AWS_VIRTUAL_HOSTING"] = "TRUE" if settings.virtual_hosting else "FALSE"
    if settings.region:
        options["AWS_REGION"] = settings.region
    source = credentials_source(settings, environ)
    options["AWS_NO_SIGN_REQUEST"] = "YES" if source == "anonymous" else "NO"
    if source == "file":
        options["AWS_SHARED_CREDENTIALS_FILE"] = str(Path(settings.credentials_file or "").expanduser())
        options["AWS_PROFILE"] = settings.profile or "default"
    return options


def configure_gdal(settings: ObjectStoreSettings | None) -> dict[str, str]:
    """Set GDAL's S3 options for this process (and the workers it starts); returns what was set."""
    if settings is None:
        return {}
    options = gdal_config(settings)
    os.environ.update(options)
    return options


__all__ = ["CDSE_KEYS_URL", "KEY_VARIABLES", "ObjectStoreSettings", "configure_gdal", "credentials_source", "endpoint_host", "gdal_config"]
