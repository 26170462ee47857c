"""schemathesis hooks for scripts/contract: rules of openapi.yaml that JSON Schema cannot state.

Loaded with SCHEMATHESIS_HOOKS=hooks (the folder on PYTHONPATH).
"""

from datetime import datetime

import schemathesis


def _instant(value):
    """An RFC 3339 time as an aware datetime, or None when absent or null."""
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))


def _window_inverted(body):
    """Whether a campaign definition's window closes at or before it opens."""
    if not isinstance(body, dict):
        return False
    try:
        opens, closes = _instant(body.get("opensAt")), _instant(body.get("closesAt"))
    except ValueError:
        return False
    return opens is not None and closes is not None and closes <= opens


def _draw_broken(body):
    """Whether a campaign definition breaks the rules of a draw that CampaignDefinition states in
    words: queueOpensAt only with opening draw; a draw needs both times, the queue's first."""
    if not isinstance(body, dict):
        return False
    draw = body.get("opening") == "draw"
    queue = body.get("queueOpensAt")
    if not draw:
        return queue is not None
    try:
        queue, opens = _instant(queue), _instant(body.get("opensAt"))
    except ValueError:
        return False
    return queue is None or opens is None or queue >= opens


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps every failure but these: a definition whose window closes before it opens, or that
    breaks a draw's rules, is valid to the schema, which cannot compare two fields, and
    WindowTime and CampaignDefinition say the server refuses it (400).
    """
    refused_definition = (
        failure.code == "ST202"
        and case.method.upper() == "POST"
        and case.operation.path == "/api/campaigns"
        and response.status_code == 400
        and (_window_inverted(case.body) or _draw_broken(case.body))
    )
    return not refused_definition
