/**
 * errno access and the {@linkcode SysError} thrown by every failing wrapper.
 *
 * @module
 */
import { libc } from "./libc.ts";

/** Linux (x86_64) errno numbers lazyd cares about. */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EPIPE: 32,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
} as const;

const NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(E).map(([name, n]) => [n, name]),
);

/** The symbolic name of an errno number, e.g. `"EAGAIN"`; `"E<n>"` if unknown. */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `E${errno}`;
}

let errnoView: Deno.UnsafePointerView | undefined;

/**
 * The calling thread's errno. Read it immediately after the failing call:
 * there is no JS code in between that could fail a libc call, and
 * successful calls (including V8's own) never reset errno. The address from
 * `__errno_location` is per thread and cached; FFI calls run on the JS
 * thread (workers have their own module instance, hence their own cache).
 */
export function errno(): number {
  errnoView ??= new Deno.UnsafePointerView(
    libc().__errno_location() as Deno.PointerObject,
  );
  return errnoView.getInt32(0);
}

/** The C library's message for an errno number (`strerror`). */
export function strerror(errno: number): string {
  const p = libc().strerror(errno);
  return p === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(p);
}

/** A failed system call: which call, the errno and its symbolic name. */
export class SysError extends Error {
  /** The libc function or operation that failed, e.g. `"ioctl(UFFDIO_COPY)"`. */
  readonly call: string;
  /** The positive errno number. */
  readonly errno: number;
  /** The symbolic errno name, e.g. `"EAGAIN"` (`"E<n>"` if not in {@linkcode E}). */
  readonly code: string;

  /** Builds the error; the message is `call: strerror (CODE)`. */
  constructor(call: string, errno: number) {
    const code = errnoName(errno);
    super(`${call}: ${strerror(errno)} (${code})`);
    this.name = "SysError";
    this.call = call;
    this.errno = errno;
    this.code = code;
  }
}

/**
 * Throws a {@linkcode SysError} (with the current errno) when a libc call
 * returned -1, otherwise returns the result as a number. `bigint` results
 * (`ssize_t`, `long`) must be safe integers, which every byte count and fd
 * is.
 */
export function check(ret: number | bigint, call: string): number {
  if (ret === -1 || ret === -1n) throw new SysError(call, errno());
  return typeof ret === "number" ? ret : toSafeNumber(ret, call);
}

/** A `bigint` as a `number`, throwing `RangeError` instead of rounding. */
export function toSafeNumber(value: bigint, what: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) {
    throw new RangeError(`${what}: ${value} is not a safe integer`);
  }
  return n;
}
