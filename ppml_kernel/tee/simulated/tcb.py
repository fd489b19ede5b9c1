"""The emulated platform TCB levels and Quoting Enclave identity.

One table drives both sides of the simulation: the PCK leaf certificate issued
for a status carries that level's CPUSVN/PCESVN, and the TCB Info in the
collateral lists every level. Each level has a distinct SVN vector, so a platform
that sits exactly on a level can never also satisfy a "higher" one (dcap-qvl
sorts levels highest first and takes the first one the platform dominates).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TcbLevel:
    """One TCB Info level, and the platform the simulator emulates for it."""

    status: str
    components: tuple[int, ...]  # 16 SGX TCB component SVNs == the platform's CPUSVN bytes
    pce_svn: int
    tcb_date: str
    advisory_ids: tuple[str, ...] = ()

    @property
    def cpu_svn(self) -> bytes:
        return bytes(self.components)


def _svns(*head: int) -> tuple[int, ...]:
    return (*head, *([0] * (16 - len(head))))


# Highest first; the statuses are dcap-qvl's TcbStatus names (CamelCase).
TCB_LEVELS: tuple[TcbLevel, ...] = (
    TcbLevel("UpToDate", _svns(7, 7, 3, 3, 255, 255, 1), 13, "2025-05-14T00:00:00Z"),
    TcbLevel(
        "SWHardeningNeeded",
        _svns(6, 6, 3, 3, 255, 255, 1),
        13,
        "2024-11-13T00:00:00Z",
        ("INTEL-SA-00615",),
    ),
    TcbLevel(
        "ConfigurationNeeded",
        _svns(6, 6, 3, 3, 255, 255, 0),
        13,
        "2024-11-13T00:00:00Z",
        ("INTEL-SA-00289",),
    ),
    TcbLevel(
        "ConfigurationAndSWHardeningNeeded",
        _svns(5, 5, 3, 3, 255, 255, 0),
        13,
        "2024-03-13T00:00:00Z",
        ("INTEL-SA-00289", "INTEL-SA-00615"),
    ),
    TcbLevel(
        "OutOfDate",
        _svns(4, 4, 2, 2, 255, 1, 0),
        11,
        "2023-02-15T00:00:00Z",
        ("INTEL-SA-00828", "INTEL-SA-00615"),
    ),
    TcbLevel(
        "OutOfDateConfigurationNeeded",
        _svns(3, 3, 2, 2, 255, 1, 0),
        10,
        "2022-11-09T00:00:00Z",
        ("INTEL-SA-00289", "INTEL-SA-00657", "INTEL-SA-00828", "INTEL-SA-00615"),
    ),
    TcbLevel(
        "Revoked",
        _svns(2, 2, 2, 2, 255, 1, 0),
        5,
        "2018-01-04T00:00:00Z",
        ("INTEL-SA-00106", "INTEL-SA-00615"),
    ),
)

TCB_STATUSES: tuple[str, ...] = tuple(level.status for level in TCB_LEVELS)
DEFAULT_TCB_STATUS = "UpToDate"

# Simulated Quoting Enclave. The QE Identity in the collateral expects exactly these;
# the QE report inside each quote carries them.
QE_ISVPRODID = 1
QE_ISVSVN = 8
QE_MISCSELECT = 0
# INIT | MODE64BIT | PROVISIONKEY, XFRM 0xE7: what Intel's QE reports.
QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
QE_IDENTITY_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
QE_IDENTITY_ATTRIBUTES_MASK = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
QE_TCB_LEVELS: tuple[tuple[int, str, str, tuple[str, ...]], ...] = (
    (8, "2025-05-14T00:00:00Z", "UpToDate", ()),
    (6, "2021-11-10T00:00:00Z", "OutOfDate", ("INTEL-SA-00615",)),
)
TCB_EVALUATION_DATA_NUMBER = 19

# FMSPC and PCE-ID of the emulated platform ("\0SIM\0\0").
FMSPC = bytes.fromhex("0053494D0000")
PCE_ID = bytes.fromhex("0000")


def tcb_level(status: str) -> TcbLevel:
    """The level for ``status``, or ValueError naming the valid choices."""
    for level in TCB_LEVELS:
        if level.status == status:
            return level
    raise ValueError(f"unknown TCB status {status!r} (choose one of: {', '.join(TCB_STATUSES)})")
