/**
 * File descriptors, files and processes: read/write/pread/close/open,
 * fcntl flags, kill and pidfds.
 *
 * @module
 */
import { check, E, errno, SysError } from "./errno.ts";
import { libc } from "./libc.ts";

/** `open`/`fcntl` flags (x86_64 values). */
export const O = {
  RDONLY: 0,
  NONBLOCK: 0o4000,
  CLOEXEC: 0o2000000,
} as const;

/** Signal numbers used by lazyd (x86_64). */
export const SIG = {
  HUP: 1,
  INT: 2,
  KILL: 9,
  TERM: 15,
  CONT: 18,
  STOP: 19,
} as const;

const SYS_PIDFD_SEND_SIGNAL = 424n;
const SYS_PIDFD_OPEN = 434n;
const F_GETFL = 3;
const F_SETFL = 4;

/** Sends signal `sig` to `pid` (`kill(2)`); sig 0 probes. Throws SysError (ESRCH if gone). */
export function kill(pid: number, sig: number): void {
  check(libc().kill(pid, sig), "kill");
}

/**
 * `pidfd_open(2)` (syscall 434): an fd that refers to `pid` and becomes
 * readable (EPOLLIN) when the process exits. Always opened close-on-exec
 * (the kernel sets it). Throws SysError (ESRCH if no such process).
 */
export function pidfdOpen(
  pid: number,
  options: { flags?: number } = {},
): number {
  return check(
    libc().syscall(
      SYS_PIDFD_OPEN,
      BigInt(pid),
      BigInt(options.flags ?? 0),
      0n,
      0n,
      0n,
      0n,
    ),
    "pidfd_open",
  );
}

/**
 * `pidfd_send_signal(2)` (syscall 424): signals the process behind a pidfd,
 * immune to pid reuse. Throws SysError (ESRCH once it has exited).
 */
export function pidfdSendSignal(pidfd: number, sig: number): void {
  check(
    libc().syscall(
      SYS_PIDFD_SEND_SIGNAL,
      BigInt(pidfd),
      BigInt(sig),
      0n,
      0n,
      0n,
      0n,
    ),
    "pidfd_send_signal",
  );
}

/**
 * `close(2)`. Throws SysError (EBADF). EINTR is not retried: Linux has
 * released the fd even then, and retrying could close someone else's.
 */
export function closeFd(fd: number): void {
  check(libc().close(fd), "close");
}

/**
 * One `read(2)` into `buf`. Returns the byte count (0 = EOF), or `null` on
 * EAGAIN (non-blocking fd with nothing to read). Retries EINTR; throws
 * SysError otherwise.
 */
export function readFd(fd: number, buf: Uint8Array): number | null {
  for (;;) {
    const n = libc().read(fd, buf, BigInt(buf.byteLength));
    if (n >= 0n) return Number(n);
    const e = errno();
    if (e === E.EINTR) continue;
    if (e === E.EAGAIN) return null;
    throw new SysError("read", e);
  }
}

/**
 * One `write(2)` of `buf`. Returns the byte count written (may be short),
 * or `null` on EAGAIN. Retries EINTR; throws SysError otherwise.
 */
export function writeFd(fd: number, buf: Uint8Array): number | null {
  for (;;) {
    const n = libc().write(fd, buf, BigInt(buf.byteLength));
    if (n >= 0n) return Number(n);
    const e = errno();
    if (e === E.EINTR) continue;
    if (e === E.EAGAIN) return null;
    throw new SysError("write", e);
  }
}

/**
 * Fills `buf` from `fd` at byte `offset` (`pread64`, 64-bit offsets; the
 * offset is passed as a `bigint` to the `off64_t` parameter, so files
 * beyond 4 GiB work). Loops over short reads; returns the number of bytes
 * read, which is less than `buf.byteLength` only at end of file. Pass a
 * `subarray` of a `PageBuffer`'s bytes to read straight into
 * page-aligned memory. Throws SysError.
 */
export function pread(
  fd: number,
  buf: Uint8Array,
  options: { offset: number },
): number {
  const { offset } = options;
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new RangeError(`pread: bad offset ${offset}`);
  }
  let done = 0;
  while (done < buf.byteLength) {
    const rest = done === 0 ? buf : buf.subarray(done);
    const n = libc().pread64(
      fd,
      rest,
      BigInt(rest.byteLength),
      BigInt(offset + done),
    );
    if (n < 0n) {
      const e = errno();
      if (e === E.EINTR) continue;
      throw new SysError("pread64", e);
    }
    if (n === 0n) break;
    done += Number(n);
  }
  return done;
}

const encoder = new TextEncoder();

/** Opens `path` read-only and close-on-exec; returns the fd. Throws SysError (ENOENT…). */
export function openRead(path: string): number {
  const cpath = encoder.encode(path + "\0");
  for (;;) {
    const fd = libc().open(cpath, O.RDONLY | O.CLOEXEC, 0);
    if (fd >= 0) return fd;
    const e = errno();
    if (e !== E.EINTR) throw new SysError(`open(${path})`, e);
  }
}

/** Sets or clears `O_NONBLOCK` on `fd` (`fcntl` F_GETFL/F_SETFL). Throws SysError. */
export function setNonblocking(fd: number, on: boolean): void {
  const flags = check(libc().fcntl(fd, F_GETFL, 0n), "fcntl(F_GETFL)");
  const next = on ? flags | O.NONBLOCK : flags & ~O.NONBLOCK;
  if (next !== flags) {
    check(libc().fcntl(fd, F_SETFL, BigInt(next)), "fcntl(F_SETFL)");
  }
}

/** This process's pid (`getpid(2)`). */
export function getpid(): number {
  return libc().getpid();
}

/** This process's real uid (`getuid(2)`). */
export function getuid(): number {
  return libc().getuid();
}
