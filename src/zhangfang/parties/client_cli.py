"""``zhangfang client …``: call the merchant API as a merchant, from the command line.

A developer's tool, the way a merchant's server calls us: every request is
signed (``Zhangfang-*`` headers; HMAC-SHA256 with your secret, or RSA2 with your
private key) and every answer's signature is checked before it is printed
(``parties.client.MerchantClient``). Credentials come from options or from
``ZHANGFANG_CLIENT_APP_ID``, ``ZHANGFANG_CLIENT_HMAC_SECRET`` (or
``ZHANGFANG_CLIENT_PRIVATE_KEY_FILE`` and ``ZHANGFANG_CLIENT_PLATFORM_KEY_FILE``
for RSA2) and ``ZHANGFANG_CLIENT_BASE_URL``.

Exit codes: 0 for a 2xx answer, 2 for any other (its JSON is printed on
stdout all the same), 1 when the answer's signature does not verify.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from zhangfang.parties import signing
from zhangfang.parties.client import MerchantClient

app = typer.Typer(
    name="client",
    help="Call the merchant API as a merchant: signed requests, verified answers (a developer's tool).",
    no_args_is_help=True,
)

BaseUrl = Annotated[
    str, typer.Option("--base-url", envvar="ZHANGFANG_CLIENT_BASE_URL", help="Where zhangfang listens.")
]
AppId = Annotated[str, typer.Option("--app-id", envvar="ZHANGFANG_CLIENT_APP_ID", help="Your app_id.")]
HmacSecret = Annotated[
    str | None,
    typer.Option("--hmac-secret", envvar="ZHANGFANG_CLIENT_HMAC_SECRET", help="Your HMAC-SHA256 secret."),
]
PrivateKey = Annotated[
    Path | None,
    typer.Option("--private-key", envvar="ZHANGFANG_CLIENT_PRIVATE_KEY_FILE", help="RSA2: your private key (PEM)."),
]
PlatformKey = Annotated[
    Path | None,
    typer.Option(
        "--platform-key",
        envvar="ZHANGFANG_CLIENT_PLATFORM_KEY_FILE",
        help="RSA2: the platform's public key (PEM, from GET /v1/platform/public-key), which signs answers.",
    ),
]


def _client(
    base_url: str, app_id: str, hmac_secret: str | None, private_key: Path | None, platform_key: Path | None
) -> MerchantClient:
    if (hmac_secret is None) == (private_key is None):
        raise typer.BadParameter("give --hmac-secret (HMAC-SHA256) or --private-key with --platform-key (RSA2)")
    if private_key is not None:
        if platform_key is None:
            raise typer.BadParameter("an RSA2 merchant checks answers with --platform-key")
        return MerchantClient(
            base_url,
            app_id=app_id,
            private_key=signing.load_private_key(private_key.read_text()),
            platform_public_key=platform_key.read_text(),
        )
    return MerchantClient(base_url, app_id=app_id, hmac_secret=hmac_secret)


def _send(
    client: MerchantClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    idempotency_key: str | None = None,
    query: dict[str, str] | None = None,
) -> None:
    try:
        response = client.request(method, path, body=body, query=query, idempotency_key=idempotency_key)
    except signing.ResponseSignatureInvalid as error:
        typer.echo(f"error: response_signature_invalid: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()
    try:
        shown = json.dumps(response.json(), ensure_ascii=False, indent=2)
    except ValueError:
        shown = response.text
    typer.echo(shown)
    verified = "signature verified" if response.status_code != 401 else "not signed (authentication refused)"
    typer.echo(f"HTTP {response.status_code}, {verified}", err=True)
    if not 200 <= response.status_code < 300:
        raise typer.Exit(2)


@app.command("get")
def client_get(
    path: Annotated[str, typer.Argument(help="Path, such as /v1/merchant/payments/pay_…")],
    base_url: BaseUrl = "http://127.0.0.1:8000",
    app_id: AppId = "",
    hmac_secret: HmacSecret = None,
    private_key: PrivateKey = None,
    platform_key: PlatformKey = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Query parameter name=value (repeatable).")] = None,
) -> None:
    """Send a signed GET and print the verified JSON answer."""
    query = dict(item.split("=", 1) for item in param or [])
    _send(_client(base_url, app_id, hmac_secret, private_key, platform_key), "GET", path, query=query or None)


@app.command("post")
def client_post(
    path: Annotated[str, typer.Argument(help="Path, such as /v1/merchant/payments")],
    idempotency_key: Annotated[
        str, typer.Option("--idempotency-key", help="Idempotency-Key: the same key and body replay the answer.")
    ],
    data: Annotated[str, typer.Option("--data", help="The JSON body.")] = "{}",
    base_url: BaseUrl = "http://127.0.0.1:8000",
    app_id: AppId = "",
    hmac_secret: HmacSecret = None,
    private_key: PrivateKey = None,
    platform_key: PlatformKey = None,
) -> None:
    """Send a signed POST of ``--data`` and print the verified JSON answer."""
    try:
        body = json.loads(data)
    except ValueError as error:
        raise typer.BadParameter(f"--data is not JSON: {error}") from None
    client = _client(base_url, app_id, hmac_secret, private_key, platform_key)
    _send(client, "POST", path, body=body, idempotency_key=idempotency_key)
