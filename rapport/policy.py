"""`rapport policy show | set | validate`: each tenant's clinical policy for the alert rules.

A policy file (TOML or JSON) names only what the clinic changes; everything else keeps its sourced default:

    note = "NHS Talking Therapies service: caseness as in the IAPT manual"
    [rules.disengagement]
    late_cancellation_hours = 48
    [instruments.gad7.not_on_track]
    caseness = 10
    [instruments.phq9.expected_trajectory]
    enabled = false

`set` refuses a file `validate` refuses, and stores the next version (versions only increase; an older one
is never changed, so an alert keeps naming the version it ran under)."""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from rapport.services.alerts import repository
from rapport.services.alerts.rules import ClinicalPolicy, PolicyProblem, PolicyValues, check, load_ruleset
from rapport.services.alerts.rules.policy import EffectivePolicy, EffectiveValue, effective
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.instruments import load_registry


class PolicyError(Exception):
    """A policy file or a request `rapport policy` refuses; the message says what to fix."""

    def __init__(self, message: str, problems: list[PolicyProblem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


def read_file(path: Path) -> PolicyValues:
    """A policy file, TOML (.toml) or JSON (anything else), as PolicyValues; refused with where it is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
        document: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path}: cannot be read ({type(error).__name__})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise PolicyError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} ({error})") \
            from None
    try:
        return PolicyValues.model_validate(document)
    except ValidationError as error:
        problems = [PolicyProblem(".".join(str(p) for p in e["loc"]) or "(file)", e["msg"]) for e in error.errors()]
        raise PolicyError(f"{path}: not a clinical policy", problems) from None


def validate(values: PolicyValues) -> list[PolicyProblem]:
    return check(values, load_registry())


async def current(url: str, tenant: str) -> ClinicalPolicy | None:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            return (await repository.clinical_policies(session, [tenant])).get(tenant)
    finally:
        await engine.dispose()


async def show(url: str, tenant: str) -> EffectivePolicy:
    return effective(tenant, await current(url, tenant), load_ruleset(), load_registry())


async def set_policy(url: str, tenant: str, values: PolicyValues, signed_off_by: str, now: datetime
                     ) -> ClinicalPolicy:
    """Store `values` as the tenant's next policy version, signed off by `signed_off_by` at `now`."""
    if problems := validate(values):
        raise PolicyError("the policy is refused", problems)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            latest = (await repository.clinical_policies(session, [tenant])).get(tenant)
            try:
                policy = ClinicalPolicy(tenant=tenant, version=(latest.version if latest else 0) + 1,
                                        signed_off_by=signed_off_by.strip(), signed_off_at=now, values=values)
            except ValidationError as error:
                fields = ", ".join(sorted({str(e["loc"][0]) for e in error.errors()}))
                raise PolicyError(f"refused: {fields} not valid (a tenant id is [a-z0-9_-]{{1,64}}; signed off by "
                                  "a name of 1 to 128 characters)") from None
            await repository.add_policy(session, policy)
    except IntegrityError:  # a concurrent set took the version: say so, never overwrite it
        raise PolicyError("another policy version was stored for this tenant at the same time; "
                          "look at `rapport policy show` and set again") from None
    finally:
        await engine.dispose()
    return policy


OBVIOUS = ("is not an alliance measure", "is not an outcome measure", "has no critical (risk) item")


def _origin(value: EffectiveValue, version: int) -> str:
    if value.origin == "tenant":
        return f"tenant's own (v{version})"
    cited = ", ".join(value.sources) or "no source"
    return f"sourced default ({cited}; {value.confidence})"


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:g}" for k, v in sorted(value.items())) or "-"
    return str(value)


def describe(policy: EffectivePolicy) -> str:
    if policy.version:
        signed = f"{policy.signed_off_at:%Y-%m-%d %H:%M} UTC" if policy.signed_off_at else "?"
        head = (f"Clinical policy of {policy.tenant}: version {policy.version}, signed off by "
                f"{policy.signed_off_by} on {signed}")
    else:
        head = (f"Clinical policy of {policy.tenant}: none set (version 0): every value is the sourced default; "
                "set one with `rapport policy set`")
    lines = [head]
    if policy.note:
        lines.append(f"note: {policy.note}")
    lines += ["", f"{'rule':<23} {'instrument':<10} {'field':<27} {'value':<10} source"]
    for v in policy.values:
        lines.append(f"{v.rule:<23} {v.instrument or '(tenant)':<10} {v.field:<27} {_shown(v.value):<10} "
                     f"{_origin(v, policy.version)}")
    lines += ["", "rules per instrument:"]
    for instrument in sorted(set(policy.runs) | set(policy.not_run)):
        runs = ", ".join(policy.runs.get(instrument, [])) or "no rule"
        lines.append(f"  {instrument:<8} runs {runs}")
        for rule, why in sorted(policy.not_run.get(instrument, {}).items()):
            if not why.endswith(OBVIOUS):  # an outcome measure runs no alliance rule: not worth a line each
                lines.append(f"  {'':<8} not {rule}: {why}")
    return "\n".join(lines)
