"""What a verified quote must also satisfy to be trusted with secrets.

A quote that verifies proves *which* code runs on *which* platform; the policy
says whether that is code and a platform we want. Empty allow-lists mean "any",
so the default policy checks the platform (TCB status, debug, simulation) but not
the measurement; deployments pin measurements from the image build's reference
values file (``ppml-reference-values/1``).

Policy files, reference-values files and the browser's policy setting are one
format with one set of rules (docs/protocol.md section 11), implemented here and in
``extensions/jupyterlab-ppml/src/dcap/policy.ts`` and held together by the shared
cases in ``tests/data/reference-values/cases.json``. The default policy is
``default-policy.json`` next to this file; the browser's copy is tested equal to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ppml_kernel.attestation.checks import Check
from ppml_kernel.attestation.errors import PolicyError
from ppml_kernel.attestation.quote import QuoteInfo
from ppml_kernel.attestation.verifiers.sgx_dcap import SGX_HEX_FIELDS, SGX_INT_FIELDS, SgxPolicy
from ppml_kernel.attestation.verifiers.tdx_dcap import TDX_HEX_FIELDS, TdxPolicy

__all__ = [
    "ALLOWABLE_TCB_STATUSES",
    "SGX_HEX_FIELDS",
    "SGX_INT_FIELDS",
    "TDX_HEX_FIELDS",
    "Check",
    "Policy",
    "PolicyError",
]

SCHEMA = "ppml-reference-values/1"
DEFAULT_POLICY_FILE = Path(__file__).with_name("default-policy.json")
DEFAULT_POLICY: dict[str, object] = json.loads(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
DEFAULT_ALLOWED_TCB_STATUSES: tuple[str, ...] = tuple(
    DEFAULT_POLICY["allowed_tcb_statuses"]  # type: ignore[arg-type]
)
KNOWN_TCB_STATUSES: tuple[str, ...] = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
# Revoked fails verification itself; a policy can never allow it.
ALLOWABLE_TCB_STATUSES: tuple[str, ...] = KNOWN_TCB_STATUSES[:-1]
TEE_KINDS: tuple[str, ...] = ("sgx", "tdx")
# Measurement pins per TEE kind live with their verifier (verifiers/sgx_dcap.py, tdx_dcap.py).
KEYS: frozenset[str] = frozenset(
    {"schema", "comment", "tee", "allowed_tcb_statuses", "denied_advisories", "allow_simulated"}
    | set(SGX_HEX_FIELDS) | set(TDX_HEX_FIELDS) | set(SGX_INT_FIELDS)
)
_ADVISORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _hex_list(name: str, value: object, size: int) -> tuple[str, ...]:
    """A hex string or a list of them, each exactly ``size`` bytes; no prefix, no spaces."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise PolicyError(f"{name}: must be a list of hex strings")
    pattern = re.compile(f"^[0-9a-fA-F]{{{2 * size}}}$")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not pattern.match(item):
            raise PolicyError(f"{name}[{i}]: must be {2 * size} hex digits, got {item!r}")
        out.append(item.lower())
    return _unique(out)


def _optional_u16(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise PolicyError(f"{name}: must be an integer 0..65535 or null, got {value!r}")
    return value


def _statuses(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError("allowed_tcb_statuses: must be a non-empty list")
    for i, status in enumerate(value):
        if status not in ALLOWABLE_TCB_STATUSES:
            raise PolicyError(
                f"allowed_tcb_statuses[{i}]: unknown or forbidden status {status!r} "
                f"(one of {', '.join(ALLOWABLE_TCB_STATUSES)})"
            )
    return _unique(value)


def _advisories(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PolicyError("denied_advisories: must be a list of advisory ids")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _ADVISORY.match(item):
            raise PolicyError(f"denied_advisories[{i}]: not an advisory id: {item!r}")
    return _unique([a.upper() for a in value])


def _implied_tee(tee: str | None, sgx_pinned: list[str], tdx_pinned: list[str]) -> str | None:
    """The TEE kind a policy is bound to: named, or implied by the fields it pins."""
    if tee is not None and tee not in TEE_KINDS:
        raise PolicyError(f"tee: must be 'sgx', 'tdx' or null, got {tee!r}")
    if sgx_pinned and tdx_pinned:
        raise PolicyError(
            f"tee: pins both SGX ({', '.join(sgx_pinned)}) and TDX ({', '.join(tdx_pinned)}) fields"
        )
    if tee == "sgx" and tdx_pinned:
        raise PolicyError(f"tee: 'sgx' policy pins TDX field(s) {', '.join(tdx_pinned)}")
    if tee == "tdx" and sgx_pinned:
        raise PolicyError(f"tee: 'tdx' policy pins SGX field(s) {', '.join(sgx_pinned)}")
    if tee is None:
        tee = "sgx" if sgx_pinned else "tdx" if tdx_pinned else None
    return tee


@dataclass(frozen=True)
class Policy:
    """Allow-lists and limits applied after cryptographic verification.

    ``tee`` binds the policy to one TEE kind ("sgx" or "tdx"); pinning a field of
    one kind implies it, so SGX pins never admit a TD and TDX pins never an enclave.
    """

    tee: str | None = None
    mrenclave: tuple[str, ...] = ()
    mrsigner: tuple[str, ...] = ()
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    mrtd: tuple[str, ...] = ()
    rtmr0: tuple[str, ...] = ()
    rtmr1: tuple[str, ...] = ()
    rtmr2: tuple[str, ...] = ()
    rtmr3: tuple[str, ...] = ()
    mrconfigid: tuple[str, ...] = ()
    mrowner: tuple[str, ...] = ()
    allowed_tcb_statuses: tuple[str, ...] = DEFAULT_ALLOWED_TCB_STATUSES
    denied_advisories: tuple[str, ...] = ()
    allow_simulated: bool = False

    def __post_init__(self) -> None:
        for status in self.allowed_tcb_statuses:
            if status not in ALLOWABLE_TCB_STATUSES:
                known = ", ".join(ALLOWABLE_TCB_STATUSES)
                raise PolicyError(f"allowed_tcb_statuses: unknown status {status!r} ({known})")
        sgx, tdx = self.sgx.pinned(), self.tdx.pinned()
        object.__setattr__(self, "tee", _implied_tee(self.tee, sgx, tdx))

    @property
    def sgx(self) -> SgxPolicy:
        """The SGX section (what an enclave must be), checked by SGX and simulated kinds."""
        return SgxPolicy(**{k: getattr(self, k) for k in (*SGX_HEX_FIELDS, *SGX_INT_FIELDS)})

    @property
    def tdx(self) -> TdxPolicy:
        """The TDX section (what a trust domain must be), checked by the TDX kind."""
        return TdxPolicy(**{k: getattr(self, k) for k in TDX_HEX_FIELDS})

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: object) -> Policy:
        """Build from a policy or reference-values mapping; unknown keys are an error.

        The rules are docs/protocol.md section 11; missing keys take the default
        policy's values (``default-policy.json``).
        """
        if not isinstance(data, dict):
            raise PolicyError("a policy must be a JSON object")
        unknown = sorted(set(data) - KEYS)
        if unknown:
            raise PolicyError(f"{unknown[0]}: unknown key (known: {', '.join(sorted(KEYS))})")
        merged = {**DEFAULT_POLICY, **data}
        if "schema" in data and data["schema"] != SCHEMA:
            raise PolicyError(f"schema: must be {SCHEMA!r}, got {data['schema']!r}")
        if "comment" in data and not isinstance(data["comment"], str):
            raise PolicyError("comment: must be a string")
        tee = merged["tee"]
        if tee is not None and not isinstance(tee, str):
            raise PolicyError(f"tee: must be 'sgx', 'tdx' or null, got {tee!r}")
        allow_sim = merged["allow_simulated"]
        if not isinstance(allow_sim, bool):
            raise PolicyError("allow_simulated: must be true or false")
        sizes = {**SGX_HEX_FIELDS, **TDX_HEX_FIELDS}
        hexes = {k: _hex_list(k, merged[k], n) for k, n in sizes.items()}
        ints = {k: _optional_u16(k, merged[k]) for k in SGX_INT_FIELDS}
        return cls(
            tee=tee,  # type: ignore[arg-type]
            **hexes,
            **ints,
            allowed_tcb_statuses=_statuses(merged["allowed_tcb_statuses"]),
            denied_advisories=_advisories(merged["denied_advisories"]),
            allow_simulated=allow_sim,
        )

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a JSON policy (or reference-values) file; errors name the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(), object_pairs_hook=_no_duplicates)
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy file {path} is not valid JSON: {exc}") from None
        except PolicyError as exc:
            raise PolicyError(f"policy file {path}: {exc}") from None
        try:
            return cls.from_dict(data)
        except PolicyError as exc:
            raise PolicyError(f"policy file {path}: {exc}") from None

    def to_dict(self) -> dict[str, object]:
        """The normalized document (every key, as in default-policy.json)."""
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
        if self.tee is not None:
            checks.append(Check("tee", quote.tee.lower() == self.tee, self.tee.upper(), quote.tee))
        section = self.sgx if quote.tee == "SGX" else self.tdx
        return checks + section.checks(quote)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json object hook: a key given twice is an error (never "last one wins")."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"{key}: duplicate key")
        out[key] = value
    return out
