"""A real S3 API on 127.0.0.1 for the object-store tests: moto's threaded server.

`s3_server` (session) starts moto's ThreadedMotoServer on a free port, points s3fs at it
the way a user points it at their own bucket -- nothing but fsspec options:
  * in this process: ``fsspec.config.conf["s3"]`` (what ``~/.config/fsspec/s3.json`` or
    ``FSSPEC_S3_ENDPOINT_URL`` set up), and
  * for subprocesses (``pipeline build --out s3://...``): the AWS_* variables
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...) which botocore reads itself;
and stops the server at the end. `s3_bucket` gives each test a fresh bucket URL.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a running moto S3 server; s3fs in this process is configured."""
    pytest.importorskip("s3fs")
    import fsspec
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved_env = {k: os.environ.get(k) for k in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
    saved_conf = fsspec.config.conf.get("s3")
    os.environ.update(CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint, "key": "testing",
                                "secret": "testing"}
    try:
        yield endpoint
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if saved_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = saved_conf
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """Environment for a subprocess that reaches the test server (AWS variables only)."""
    env = dict(os.environ)
    env.update(CREDENTIALS)
    env["AWS_ENDPOINT_URL"] = endpoint
    return env


def new_bucket(endpoint: str) -> str:
    import s3fs

    name = f"b-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing").mkdir(name)
    return name


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """``s3://<fresh bucket>`` on the test server."""
    return f"s3://{new_bucket(s3_server)}"
