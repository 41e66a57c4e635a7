"""Parties (参与方): merchants and their payers, and the credentials merchants sign requests with.

Files: ``tables.py`` (storage), ``models.py`` (frozen dataclasses), ``errors.py``
(the error catalogue and its precedence), ``service.py`` (the operations),
``signing.py`` (RSA2 and HMAC-SHA256 signatures, the canonical request and
response strings), ``api.py`` (admin and merchant routers), ``cli.py``
(``zhangfang merchants …``). Request authentication itself is
``zhangfang.api.merchant_auth``.
"""
