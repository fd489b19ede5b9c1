"""Enclave memory and thread limits from the workload, with the arithmetic shown.

The anchors' users guessed EPC sizes and ended up with 20-30 GB enclaves. Here the
limits follow from what the kernel runs (one Python kernel, one Spark driver JVM,
Python UDF workers), from numbers measured outside an enclave on this project's
machines (docs/deploy.md, "EPC sizing"), and every term is printed by
``ppml-kernel occlum config --explain`` so an operator can see what to raise.

Occlum facts this relies on: without EDMM the whole ``user_space_size`` is committed
(EADDed) at enclave start, so it costs start time and EPC whether used or not; every
LibOS process reserves ``default_heap_size`` (brk) and ``default_stack_size`` from
user space; mmap reservations (the JVM reserves its whole heap up front) come out of
user space too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ppml_kernel.occlum.sizes import GiB, MiB, format_size, round_up

# Budget per component (bytes). Measured outside an enclave, local[2], 1 GB driver heap:
# kernel Python 157 MB RSS after imports (ipykernel, pandas, pyarrow, cryptography,
# dcap-qvl), 350-600 MB virtual; driver JVM 480-520 MB RSS, ~100 threads; Python UDF
# workers 40-130 MB RSS, 245-350 MB virtual each.
PYTHON_KERNEL = 1 * GiB
JVM_NON_HEAP = 1 * GiB  # metaspace, code cache, thread stacks, direct buffers
PYTHON_WORKER = 512 * MiB
PROCESS_HEAP = 128 * MiB  # process.default_heap_size (brk), reserved per process
PROCESS_STACK = 8 * MiB  # process.default_stack_size, per process main thread
KERNEL_HEAP = 512 * MiB  # LibOS heap: per-thread state, SEFS caches, sockets
KERNEL_STACK = 1 * MiB
MMAP_SIZE = 100 * MiB  # process.default_mmap_size: obsolete in Occlum, still required
STEP = 256 * MiB
MIN_THREADS = 256
# EDMM: commit a small part at start (fast start), the rest on demand.
EDMM_USER_INIT = 512 * MiB
EDMM_KERNEL_HEAP_INIT = 64 * MiB
EDMM_INIT_THREADS = 32


@dataclass(frozen=True)
class ResourcePlan:
    """The ``resource_limits`` and ``process`` sections of Occlum.json, in bytes."""

    user_space_size: int
    kernel_space_heap_size: int
    max_num_of_threads: int
    user_space_max_size: int | None = None
    kernel_space_heap_max_size: int | None = None
    init_num_of_threads: int | None = None
    kernel_space_stack_size: int = KERNEL_STACK
    default_stack_size: int = PROCESS_STACK
    default_heap_size: int = PROCESS_HEAP
    default_mmap_size: int = MMAP_SIZE
    breakdown: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    @property
    def enclave_user_memory(self) -> int:
        """The most user memory the enclave can use (what EPC must back)."""
        return self.user_space_max_size or self.user_space_size

    def resource_limits(self) -> dict[str, object]:
        out: dict[str, object] = {
            "user_space_size": format_size(self.user_space_size),
            "kernel_space_heap_size": format_size(self.kernel_space_heap_size),
            "kernel_space_stack_size": format_size(self.kernel_space_stack_size),
            "max_num_of_threads": self.max_num_of_threads,
        }
        if self.user_space_max_size is not None:
            out["user_space_max_size"] = format_size(self.user_space_max_size)
        if self.kernel_space_heap_max_size is not None:
            out["kernel_space_heap_max_size"] = format_size(self.kernel_space_heap_max_size)
        if self.init_num_of_threads is not None:
            out["init_num_of_threads"] = self.init_num_of_threads
        return out

    def process(self) -> dict[str, str]:
        return {
            "default_stack_size": format_size(self.default_stack_size),
            "default_heap_size": format_size(self.default_heap_size),
            "default_mmap_size": format_size(self.default_mmap_size),
        }

    def explain(self) -> str:
        """The budget, one line per term, for ``--explain``."""
        lines = [f"  {name:<44} {format_size(size):>8}" for name, size in self.breakdown]
        lines.append(
            f"  {'user space (rounded up to 256MB)':<44} {format_size(self.enclave_user_memory):>8}"
        )
        lines.append(
            f"  {'LibOS kernel heap':<44} "
            f"{format_size(self.kernel_space_heap_max_size or self.kernel_space_heap_size):>8}"
        )
        lines.append(f"  {'threads (max_num_of_threads)':<44} {self.max_num_of_threads:>8}")
        return "\n".join(lines)


def plan(
    driver_memory: int = 2 * GiB,
    cores: int = 2,
    python_workers: int | None = None,
    *,
    edmm: bool = False,
) -> ResourcePlan:
    """Limits for a kernel whose Spark driver has ``driver_memory`` heap and ``cores``.

    ``python_workers`` is how many Python UDF workers run at once (default: ``cores``).
    With ``edmm`` (SGX2, Linux 6.0+), start small and grow on demand.
    """
    if driver_memory <= 0 or cores < 1:
        raise ValueError("driver memory must be positive and cores at least 1")
    workers = cores if python_workers is None else python_workers
    if workers < 0:
        raise ValueError("python workers must not be negative")
    processes = 3 + workers  # kernel Python, spark-submit shell, JVM, workers
    breakdown = (
        ("Spark driver JVM heap (spark.driver.memory)", driver_memory),
        ("JVM non-heap (metaspace, code cache, stacks)", JVM_NON_HEAP),
        ("kernel Python (IPython, pandas, pyarrow)", PYTHON_KERNEL),
        (f"{workers} Python UDF worker(s) x 512MB", workers * PYTHON_WORKER),
        (
            f"{processes} processes x (brk heap + main stack)",
            processes * (PROCESS_HEAP + PROCESS_STACK),
        ),
    )
    user_space = round_up(sum(size for _, size in breakdown), STEP)
    threads = max(MIN_THREADS, 128 + 32 * cores)
    if edmm:
        return ResourcePlan(
            user_space_size=min(EDMM_USER_INIT, user_space),
            user_space_max_size=user_space,
            kernel_space_heap_size=EDMM_KERNEL_HEAP_INIT,
            kernel_space_heap_max_size=KERNEL_HEAP,
            max_num_of_threads=threads,
            init_num_of_threads=EDMM_INIT_THREADS,
            breakdown=breakdown,
        )
    return ResourcePlan(
        user_space_size=user_space,
        kernel_space_heap_size=KERNEL_HEAP,
        max_num_of_threads=threads,
        breakdown=breakdown,
    )
