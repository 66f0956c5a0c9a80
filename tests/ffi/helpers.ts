/**
 * Shared set-up for the FFI tests (not a test file itself).
 *
 * @module
 */
import {
  closeFd,
  E,
  O,
  SysError,
  UFFD_USER_MODE_ONLY,
  userfaultfd,
} from "../../ffi/mod.ts";

/**
 * A non-blocking close-on-exec userfaultfd for this process, as the
 * restorer creates it. Without CAP_SYS_PTRACE (and with
 * vm.unprivileged_userfaultfd = 0) that fails with EPERM; user-mode-only
 * is enough for these tests, which never fault from kernel mode.
 */
export function newUffd(): number {
  try {
    return userfaultfd(O.CLOEXEC | O.NONBLOCK);
  } catch (e) {
    if (!(e instanceof SysError) || e.errno !== E.EPERM) throw e;
    return userfaultfd(O.CLOEXEC | O.NONBLOCK | UFFD_USER_MODE_ONLY);
  }
}

/** Closes every fd given, ignoring errors (for `finally` blocks). */
export function closeAll(...fds: number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
}

/** The target of `/proc/self/fd/<fd>`, e.g. `anon_inode:[userfaultfd]`. */
export function fdTarget(fd: number): string {
  return Deno.readLinkSync(`/proc/self/fd/${fd}`);
}
