"""The API's versions and endpoints: one table, read by the session, the converter and the CLI.

Adding an endpoint is its model in :mod:`stability_user._models`, one row here,
and a two-line session method; the converter learns the model from this table.
"""

from __future__ import annotations

from typing import Any, Final, Generic, TypeVar

import attrs

from ._models import Account, Balance

__all__ = ["ACCOUNT", "API_VERSIONS", "BALANCE", "DEFAULT_API_VERSION", "ENDPOINTS", "Endpoint"]

T = TypeVar("T")

API_VERSIONS: Final = ("v1", "v1alpha")
"""The versions of the user API the library speaks, the default first."""

DEFAULT_API_VERSION: Final = API_VERSIONS[0]
"""v1: the service's published spec retired the v1alpha and v1beta paths in its favour."""


@attrs.frozen
class Endpoint(Generic[T]):
    """One operation of the user API.

    Attributes:
        name: a short name, e.g. ``"balance"``.
        method: the HTTP method.
        path: the path under ``/{version}/``, e.g. ``"user/balance"``.
        model: the class a success body is structured into.
        takes_organization: whether the ``Organization`` header applies.
    """

    name: str
    method: str
    path: str
    model: type[T]
    takes_organization: bool = False

    def url(self, base_url: str, api_version: str) -> str:
        """The endpoint's absolute URL on ``base_url`` for ``api_version``."""
        return f"{base_url}/{api_version}/{self.path}"


ACCOUNT: Final = Endpoint("account", "GET", "user/account", Account)
BALANCE: Final = Endpoint("balance", "GET", "user/balance", Balance, takes_organization=True)
ENDPOINTS: Final[tuple[Endpoint[Any], ...]] = (ACCOUNT, BALANCE)
