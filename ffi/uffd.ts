/**
 * userfaultfd: constants, the ioctls and their result conventions.
 * Decoding of `uffd_msg` lives in `uffd_msg.ts`.
 *
 * The daemon only ever calls COPY, ZEROPAGE and UNREGISTER on fds it
 * received from restored processes; {@linkcode userfaultfd},
 * {@linkcode uffdApi}, {@linkcode uffdRegister} and {@linkcode uffdWake}
 * exist for tests and tools.
 *
 * All addresses and lengths are numbers (safe integers; x86_64 user
 * addresses are below 2^57). The structs are per-module scratch memory
 * allocated once, so these calls allocate nothing but their result object.
 *
 * @module
 */
import { check, errno } from "./errno.ts";
import { libc } from "./libc.ts";
import { getI64, getU64, type Scratch, scratch, setU64 } from "./buffer.ts";

/** `UFFD_API`: the API version passed in `uffdio_api.api`. */
export const UFFD_API = 0xaa;

/** Flags for {@linkcode userfaultfd} besides `O_CLOEXEC`/`O_NONBLOCK`. */
export const UFFD_USER_MODE_ONLY = 1;

/** `UFFD_EVENT_*`: the `event` byte of a `uffd_msg`. */
export const UFFD_EVENT = {
  PAGEFAULT: 0x12,
  FORK: 0x13,
  REMAP: 0x14,
  REMOVE: 0x15,
  UNMAP: 0x16,
} as const;

/** `UFFD_FEATURE_*` bits for `uffdio_api.features`. */
export const UFFD_FEATURE = {
  PAGEFAULT_FLAG_WP: 0x001,
  EVENT_FORK: 0x002,
  EVENT_REMAP: 0x004,
  EVENT_REMOVE: 0x008,
  MISSING_HUGETLBFS: 0x010,
  MISSING_SHMEM: 0x020,
  EVENT_UNMAP: 0x040,
  SIGBUS: 0x080,
  THREAD_ID: 0x100,
  /** Without it, pagefault addresses are masked to the page. */
  EXACT_ADDRESS: 0x800,
} as const;

/** The features CRIU's restore requests (FORK|REMAP|REMOVE|UNMAP = 0x4E). */
export const CRIU_FEATURES = UFFD_FEATURE.EVENT_FORK |
  UFFD_FEATURE.EVENT_REMAP |
  UFFD_FEATURE.EVENT_REMOVE | UFFD_FEATURE.EVENT_UNMAP;

/** `UFFD_PAGEFAULT_FLAG_*` bits of a pagefault message's `flags`. */
export const UFFD_PAGEFAULT_FLAG = {
  WRITE: 0x1,
  WP: 0x2,
  MINOR: 0x4,
} as const;

/** `UFFDIO_REGISTER_MODE_*` bits. */
export const UFFDIO_REGISTER_MODE = {
  MISSING: 1,
  WP: 2,
} as const;

/** `UFFDIO_COPY_MODE_DONTWAKE` / `UFFDIO_ZEROPAGE_MODE_DONTWAKE`. */
export const UFFDIO_MODE_DONTWAKE = 1;

/** ioctl request numbers (`_IOC(dir, 0xAA, nr, size)`), as bigints for the `u64` parameter. */
export const UFFDIO = {
  API: 0xc018aa3fn,
  REGISTER: 0xc020aa00n,
  UNREGISTER: 0x8010aa01n,
  WAKE: 0x8010aa02n,
  COPY: 0xc028aa03n,
  ZEROPAGE: 0xc020aa04n,
} as const;

/** Bit numbers in `uffdio_register.ioctls` / `uffdio_api.ioctls` (the ioctl `nr`). */
export const UFFDIO_BIT = {
  REGISTER: 0,
  UNREGISTER: 1,
  WAKE: 2,
  COPY: 3,
  ZEROPAGE: 4,
  API: 63,
} as const;

const SYS_USERFAULTFD = 323n;

/**
 * Creates a userfaultfd for the calling process's own memory (syscall
 * 323), e.g. `userfaultfd(O.CLOEXEC | O.NONBLOCK)`. Throws SysError
 * (EPERM when unprivileged without `UFFD_USER_MODE_ONLY`, ENOSYS).
 */
export function userfaultfd(flags: number): number {
  return check(
    libc().syscall(SYS_USERFAULTFD, BigInt(flags), 0n, 0n, 0n, 0n, 0n),
    "userfaultfd",
  );
}

/** Result of {@linkcode uffdApi}. */
export interface UffdApiResult {
  /** Features enabled (or, when 0 was requested, supported). */
  features: number;
  /** Bitmask of ioctls usable on the fd; a bigint because bit 63 (API) is set. */
  ioctls: bigint;
}

let apiStruct: Scratch | undefined;
let rangeStruct: Scratch | undefined; // uffdio_range: UNREGISTER, WAKE
let registerStruct: Scratch | undefined;
let copyStruct: Scratch | undefined;
let zeroStruct: Scratch | undefined;

/**
 * `UFFDIO_API` handshake (must be the first ioctl on a new uffd; a second
 * one fails with EINVAL). Throws SysError.
 */
export function uffdApi(
  fd: number,
  options: { features?: number } = {},
): UffdApiResult {
  const s = (apiStruct ??= scratch(24));
  s.bytes.fill(0);
  setU64(s.view, 0, UFFD_API);
  setU64(s.view, 8, options.features ?? 0);
  check(libc().ioctl(fd, UFFDIO.API, s.pointer), "ioctl(UFFDIO_API)");
  return {
    features: getU64(s.view, 8, "uffdio_api.features"),
    ioctls: s.view.getBigUint64(16, true),
  };
}

/**
 * `UFFDIO_REGISTER` of `[start, start + len)` (default mode MISSING).
 * Returns the `ioctls` bitmask the range supports (bits per
 * {@linkcode UFFDIO_BIT}). Throws SysError.
 */
export function uffdRegister(
  fd: number,
  options: { start: number; len: number; mode?: number },
): number {
  const s = (registerStruct ??= scratch(32));
  setU64(s.view, 0, options.start);
  setU64(s.view, 8, options.len);
  setU64(s.view, 16, options.mode ?? UFFDIO_REGISTER_MODE.MISSING);
  setU64(s.view, 24, 0);
  check(libc().ioctl(fd, UFFDIO.REGISTER, s.pointer), "ioctl(UFFDIO_REGISTER)");
  return getU64(s.view, 24, "uffdio_register.ioctls");
}

function rangeIoctl(
  fd: number,
  range: { start: number; len: number },
  request: bigint,
  call: string,
): void {
  const s = (rangeStruct ??= scratch(16));
  setU64(s.view, 0, range.start);
  setU64(s.view, 8, range.len);
  check(libc().ioctl(fd, request, s.pointer), call);
}

/**
 * `UFFDIO_UNREGISTER` of `[start, start + len)`: later faults there are
 * ordinary (zero-fill) faults. Throws SysError; ENOMEM means the target
 * mm is gone (the process exited).
 */
export function uffdUnregister(
  fd: number,
  range: { start: number; len: number },
): void {
  rangeIoctl(fd, range, UFFDIO.UNREGISTER, "ioctl(UFFDIO_UNREGISTER)");
}

/** `UFFDIO_WAKE` of `[start, start + len)`. Throws SysError. */
export function uffdWake(
  fd: number,
  range: { start: number; len: number },
): void {
  rangeIoctl(fd, range, UFFDIO.WAKE, "ioctl(UFFDIO_WAKE)");
}

/** Outcome of {@linkcode uffdCopy} / {@linkcode uffdZeropage}; never thrown. */
export interface FillResult {
  /** Bytes filled, from the start of the range (>= 0, a multiple of the page size). */
  copied: number;
  /** 0 if the whole range was filled, else a positive errno (compare with `E`). */
  error: number;
}

/*
 * How COPY and ZEROPAGE report (fs/userfaultfd.c, mm/userfaultfd.c):
 *
 * - Whole range done: ioctl returns 0; the out field holds len.
 * - Partial: the kernel stops at the first page it cannot fill (already
 *   present, outside the VMA, ...), wakes the waiters for the part it did,
 *   stores the byte count in the out field and fails with EAGAIN. So a
 *   partial result is "-1/EAGAIN with a positive count", not success.
 * - Nothing done: the out field holds the negated errno (-EEXIST, -ENOENT,
 *   ...) and errno is the same.
 * - Early failures never touch the out field: EAGAIN while a
 *   non-cooperative event (fork/remap/remove/unmap) is being delivered
 *   (mmap_changing), ESRCH when the target mm is gone, EINVAL/EFAULT from
 *   argument validation. That is why the field is zeroed before every call
 *   and errno is the fallback when it is still 0.
 */
function fillResult(ret: number, field: number, len: number): FillResult {
  if (ret === 0) return { copied: field > 0 ? field : len, error: 0 };
  if (field > 0) return { copied: field, error: errno() };
  if (field < 0) return { copied: 0, error: -field };
  return { copied: 0, error: errno() };
}

/**
 * `UFFDIO_COPY`: atomically fills `[dst, dst + len)` of the uffd's process
 * with `len` bytes from `src` (an address in *this* process, e.g. a
 * `PageBuffer`'s `address` + offset; keep that buffer alive) and
 * wakes threads faulting there. `dst` and `len` must be page aligned and
 * the range must lie in one registered VMA. Never throws for kernel
 * errors: see {@linkcode FillResult} — a partial copy reports the bytes
 * copied AND `error: EAGAIN`; ESRCH means the process is gone.
 */
export function uffdCopy(
  fd: number,
  options: { dst: number; src: number; len: number; mode?: number },
): FillResult {
  const s = (copyStruct ??= scratch(40));
  setU64(s.view, 0, options.dst);
  setU64(s.view, 8, options.src);
  setU64(s.view, 16, options.len);
  setU64(s.view, 24, options.mode ?? 0);
  setU64(s.view, 32, 0);
  const ret = libc().ioctl(fd, UFFDIO.COPY, s.pointer);
  // errno must be read before anything else can fail: fillResult reads it
  // first thing when needed, and getI64 makes no libc call.
  return fillResult(ret, getI64(s.view, 32, "uffdio_copy.copy"), options.len);
}

/**
 * `UFFDIO_ZEROPAGE`: maps the shared zero page over `[start, start + len)`
 * and wakes threads faulting there. Same result convention as
 * {@linkcode uffdCopy}.
 */
export function uffdZeropage(
  fd: number,
  options: { start: number; len: number; mode?: number },
): FillResult {
  const s = (zeroStruct ??= scratch(32));
  setU64(s.view, 0, options.start);
  setU64(s.view, 8, options.len);
  setU64(s.view, 16, options.mode ?? 0);
  setU64(s.view, 24, 0);
  const ret = libc().ioctl(fd, UFFDIO.ZEROPAGE, s.pointer);
  return fillResult(
    ret,
    getI64(s.view, 24, "uffdio_zeropage.zeropage"),
    options.len,
  );
}
