"""What a verified quote must also satisfy to be trusted with secrets.

A quote that verifies proves *which* code runs on *which* platform; the policy
says whether that is code and a platform we want. Empty allow-lists mean "any",
so the default policy checks the platform (TCB status, debug, simulation) but not
the measurement; deployments pin measurements from the image build's reference
values file (``ppml-reference-values/1``), which this loader also reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ppml_kernel.attestation.quote import QuoteInfo

DEFAULT_ALLOWED_TCB_STATUSES: tuple[str, ...] = ("UpToDate", "SWHardeningNeeded")
KNOWN_TCB_STATUSES: tuple[str, ...] = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)


class PolicyError(ValueError):
    """A policy file or value is invalid (names the field)."""


@dataclass(frozen=True)
class Check:
    """One policy or verification check, shown as a row in reports."""

    name: str
    ok: bool
    expected: str
    actual: str


def _allow_list(name: str, allowed: tuple[str, ...], actual: str | None) -> Check:
    return Check(name, actual in allowed, " | ".join(allowed), actual or "")


def _hex_list(name: str, value: object, size: int) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise PolicyError(f"{name} must be a hex string or a list of them")
    out = []
    for item in items:
        text = str(item).strip().lower().removeprefix("0x")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise PolicyError(f"{name}: {item!r} is not hex") from None
        if len(raw) != size:
            raise PolicyError(f"{name}: {item!r} is {len(raw)} bytes, expected {size}")
        out.append(text)
    return tuple(out)


def _optional_int(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise PolicyError(f"{name} must be an integer 0..65535, got {value!r}")
    return value


@dataclass(frozen=True)
class Policy:
    """Allow-lists and limits applied after cryptographic verification."""

    mrenclave: tuple[str, ...] = ()
    mrsigner: tuple[str, ...] = ()
    mrtd: tuple[str, ...] = ()
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    allowed_tcb_statuses: tuple[str, ...] = DEFAULT_ALLOWED_TCB_STATUSES
    denied_advisories: tuple[str, ...] = ()
    allow_simulated: bool = False

    def __post_init__(self) -> None:
        for status in self.allowed_tcb_statuses:
            if status not in KNOWN_TCB_STATUSES:
                known = ", ".join(KNOWN_TCB_STATUSES)
                raise PolicyError(f"allowed_tcb_statuses: unknown status {status!r} ({known})")

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Policy:
        """Build from a policy or reference-values mapping; unknown keys are an error."""
        if not isinstance(data, dict):
            raise PolicyError("a policy must be a JSON object")
        data = dict(data)
        data.pop("schema", None)
        data.pop("tee", None)
        data.pop("comment", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(f"unknown policy field(s): {', '.join(unknown)}")
        statuses = data.get("allowed_tcb_statuses", DEFAULT_ALLOWED_TCB_STATUSES)
        if not isinstance(statuses, (list, tuple)):
            raise PolicyError("allowed_tcb_statuses must be a list")
        advisories = data.get("denied_advisories", ())
        if not isinstance(advisories, (list, tuple)):
            raise PolicyError("denied_advisories must be a list")
        allow_sim = data.get("allow_simulated", False)
        if not isinstance(allow_sim, bool):
            raise PolicyError("allow_simulated must be true or false")
        return cls(
            mrenclave=_hex_list("mrenclave", data.get("mrenclave"), 32),
            mrsigner=_hex_list("mrsigner", data.get("mrsigner"), 32),
            mrtd=_hex_list("mrtd", data.get("mrtd"), 48),
            isv_prod_id=_optional_int("isv_prod_id", data.get("isv_prod_id")),
            min_isv_svn=_optional_int("min_isv_svn", data.get("min_isv_svn")),
            allowed_tcb_statuses=tuple(str(s) for s in statuses),
            denied_advisories=tuple(str(a).upper() for a in advisories),
            allow_simulated=allow_sim,
        )

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a JSON policy (or reference-values) file; errors name the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy file {path} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except PolicyError as exc:
            raise PolicyError(f"policy file {path}: {exc}") from None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    # -- evaluation ---------------------------------------------------------------
    def evaluate(
        self, quote: QuoteInfo, tcb_status: str, advisory_ids: list[str], simulated: bool
    ) -> list[Check]:
        """Every check this policy makes on a cryptographically verified quote."""
        checks = [
            Check(
                "debug",
                not quote.debug,
                "production enclave",
                "DEBUG" if quote.debug else "production",
            ),
            Check(
                "simulation",
                self.allow_simulated or not simulated,
                "simulation allowed"
                if self.allow_simulated
                else "real TEE (simulation not allowed)",
                "SIMULATED" if simulated else "hardware root of trust",
            ),
            Check(
                "tcb_status",
                tcb_status in self.allowed_tcb_statuses,
                " | ".join(self.allowed_tcb_statuses),
                tcb_status,
            ),
        ]
        denied = sorted(set(advisory_ids) & set(self.denied_advisories))
        if self.denied_advisories:
            checks.append(
                Check(
                    "advisories",
                    not denied,
                    "none of " + ", ".join(self.denied_advisories),
                    ", ".join(denied) or "none denied",
                )
            )
        if quote.tee == "SGX":
            checks += self._sgx_checks(quote)
        elif self.mrtd:
            checks.append(_allow_list("mrtd", self.mrtd, quote.mr_td))
        elif self.mrenclave or self.mrsigner:
            checks.append(Check("tee", False, "SGX (policy pins MRENCLAVE/MRSIGNER)", quote.tee))
        return checks

    def _sgx_checks(self, quote: QuoteInfo) -> list[Check]:
        checks = []
        if self.mrenclave:
            checks.append(_allow_list("mrenclave", self.mrenclave, quote.mrenclave))
        if self.mrsigner:
            checks.append(_allow_list("mrsigner", self.mrsigner, quote.mrsigner))
        if self.isv_prod_id is not None:
            checks.append(
                Check(
                    "isv_prod_id",
                    quote.isv_prod_id == self.isv_prod_id,
                    str(self.isv_prod_id),
                    str(quote.isv_prod_id),
                )
            )
        if self.min_isv_svn is not None:
            svn = quote.isv_svn or 0
            checks.append(
                Check("isv_svn", svn >= self.min_isv_svn, f">= {self.min_isv_svn}", str(svn))
            )
        if self.mrtd:
            checks.append(Check("tee", False, "TDX (policy pins MRTD)", quote.tee))
        return checks
