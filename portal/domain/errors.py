"""Errors of the portal's domain; each maps to one HTTP status and a one-line message."""

from __future__ import annotations

from cryofac.errors import CryofacError


class PortalError(CryofacError):
    """A failure the user can act on. ``status`` is the HTTP status, ``code`` a stable name."""

    status = 400
    code = "bad_request"

    def __init_subclass__(cls, status: int | None = None, code: str | None = None, **kw):
        """``class Gone(PortalError, status=410, code="gone")`` sets both at once."""
        super().__init_subclass__(**kw)
        cls.status = cls.status if status is None else status
        cls.code = cls.code if code is None else code

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)

    @property
    def human(self) -> str:
        """The message as a page shows it to a person (plain words)."""
        return getattr(self, "plain", None) or self.message


class InvalidInput(PortalError, status=400, code="invalid_input"):
    """Malformed or out-of-range input."""


class Unauthorized(PortalError, status=401, code="unauthorized"):
    """No valid credentials."""


class Forbidden(PortalError, status=403, code="forbidden"):
    """Not allowed for this user."""


class NotFound(PortalError, status=404, code="not_found"):
    """No such thing (or not visible to this user)."""


class Conflict(PortalError, status=409, code="conflict"):
    """The request conflicts with the current state."""


class BookingConflict(Conflict, code="booking_conflict"):
    """The slot overlaps another booking or a maintenance block on the same instrument."""


class CancellationTooLate(Conflict, code="cancellation_deadline"):
    """Past the cancellation deadline."""


class InvalidTransition(Conflict, code="invalid_transition"):
    """Not allowed from the current state."""


class BookingRuleViolation(PortalError, status=422, code="booking_rule"):
    """A booking breaks a rule; ``rule`` names it (e.g. ``lead_time``, ``allocation``)."""

    #: What each rule means, for people (the message then says what exactly).
    RULE_TITLES = {
        "time_order": "The end must be after the start",
        "project_state": "The project is not active",
        "training": "Training needed",
        "min_duration": "Too short",
        "max_duration": "Too long",
        "lead_time": "Too soon",
        "allocation": "Not enough hours left",
        "sample_prep": "Sample preparation",
        "horizon": "Too far ahead",
    }

    def __init__(self, rule: str, message: str):
        self.rule = rule
        super().__init__(f"{rule}: {message}")  # the API's message (stable; rule in front)
        title = self.RULE_TITLES.get(rule)
        #: the message for people: plain words, no rule identifier
        if title is None or message.lower().startswith(title.lower()):
            self.plain = message[:1].upper() + message[1:]
        else:
            self.plain = f"{title}: {message}"
        if not self.plain.endswith("."):
            self.plain += "."


class GateClosed(PortalError, status=409, code="gate_closed"):
    """The environment gate refuses to start acquisition; ``reasons`` lists why."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__("environment gate closed: " + "; ".join(self.reasons))


class GateUnavailable(PortalError, status=503, code="gate_unavailable"):
    """The environment gate could not decide (database silent or unreachable,
    configuration broken): acquisition is refused, ``reasons`` says why (HTTP 503,
    body ``{"allowed": false, "reasons": [...]}`` beside the error)."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        self.allowed = False
        super().__init__("environment gate cannot decide: " + "; ".join(self.reasons))


class TooManyAttempts(PortalError, status=429, code="too_many_attempts"):
    """Refused for now; ``retry_after_s`` says when to try again (HTTP ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: int | None = None):
        self.retry_after_s = retry_after_s
        super().__init__(message)
