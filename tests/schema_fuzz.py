"""Schema-driven requests (schemathesis) to every operation of a running server: the 5xx check that
test_server.py runs on the stand-in model and test_server_hostile.py on the fake one."""

from __future__ import annotations

from collections import Counter


def fuzz_every_operation(url: str, *, positive: int, negative: int, timeout: float) -> tuple[Counter, list[str]]:
    """Send up to ``positive`` valid and ``negative`` invalid examples to each operation of ``url``'s
    OpenAPI schema (no invalid ones to a bare GET); return the count of each ``(path, status)`` and
    a line for each 5xx answer. Each answer is also checked with schemathesis's ``not_a_server_error``."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    statuses: Counter = Counter()
    failures: list[str] = []
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    for mode, examples in ((GenerationMode.POSITIVE, positive), (GenerationMode.NEGATIVE, negative)):
        for result in schema.get_all_operations():
            operation = result.ok()
            if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # nothing in a bare GET can be made invalid

            @settings(max_examples=examples, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                response = case.call(base_url=url, timeout=timeout)
                statuses[(case.path, response.status_code)] += 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.path} {case.body!r} -> {response.text}")
                case.validate_response(response, checks=[not_a_server_error])

            check()
    return statuses, failures
