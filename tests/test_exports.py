import stability_user

PROMISED = {
    "StabilitySession",
    "RetryPolicy",
    "RateLimit",
    "RateLimitStore",
    "RateLimitWait",
    "MemoryRateLimitStore",
    "LocalRateLimitStore",
    "RedisRateLimitStore",
    "Request",
    "Response",
    "Transport",
    "BalanceTarget",
    "BalanceResult",
    "BalanceReading",
    "CachePolicy",
    "Freshness",
    "Account",
    "OrganizationMembership",
    "Balance",
    "ErrorBody",
    "StabilityError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "APIConnectionError",
    "APITimeoutError",
    "ResponseValidationError",
    "__version__",
    "read_targets",
    "TargetFileError",
}


def test_all_is_exactly_the_documented_public_api() -> None:
    assert set(stability_user.__all__) == PROMISED
    assert list(stability_user.__all__) == sorted(stability_user.__all__)
    for name in stability_user.__all__:
        assert hasattr(stability_user, name), name


def test_nothing_private_or_imported_leaks_as_a_public_attribute() -> None:
    # pytest rewrites the package (it holds a pytest plugin) and adds "@py_*" names.
    public = {n for n in dir(stability_user) if not n.startswith(("_", "@"))}
    # Subpackages and optional modules appear once imported: testing, otel, cli, fleet, sync.
    assert public - set(stability_user.__all__) <= {"testing", "otel", "cli", "fleet", "sync"}


def test_every_public_name_has_a_docstring() -> None:
    for name in stability_user.__all__:
        if name == "__version__":
            continue
        obj = getattr(stability_user, name)
        assert obj.__doc__, name
        assert obj.__doc__.strip(), name
        for attr, member in vars(obj).items():
            if not attr.startswith("_") and callable(member):
                assert member.__doc__, f"{name}.{attr}"


def test_version_is_a_release_string() -> None:
    assert stability_user.__version__.count(".") == 2


def test_error_hierarchy() -> None:
    s = stability_user
    for cls in (
        s.BadRequestError,
        s.AuthenticationError,
        s.PermissionDeniedError,
        s.NotFoundError,
        s.RateLimitError,
        s.ServerError,
    ):
        assert issubclass(cls, s.APIError)
    assert issubclass(s.APITimeoutError, s.APIConnectionError)
    for base in (s.APIError, s.APIConnectionError, s.ResponseValidationError):
        assert issubclass(base, s.StabilityError)
