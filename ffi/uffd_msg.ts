/**
 * Reading and decoding `struct uffd_msg` (32 bytes each) from a uffd.
 *
 * @module
 */
import { E, errno, SysError } from "./errno.ts";
import { libc } from "./libc.ts";
import { getU64, type Scratch, scratch } from "./buffer.ts";
import { UFFD_EVENT } from "./uffd.ts";

/** Size of one `struct uffd_msg`. */
export const UFFD_MSG_SIZE = 32;

/** Most messages {@linkcode readMessages} reads at once. */
export const MAX_MESSAGES = 64;

/**
 * A decoded `uffd_msg`, fields as the kernel reported them; `end` is
 * exclusive. A pagefault address is page aligned because the kernel masks
 * it unless UFFD_FEATURE_EXACT_ADDRESS was enabled (CRIU does not enable
 * it); consumers should still round down rather than rely on that.
 */
export type UffdEvent =
  | {
    kind: "pagefault";
    /** Faulting address (page aligned without UFFD_FEATURE_EXACT_ADDRESS). */
    address: number;
    /** `UFFD_PAGEFAULT_FLAG_*` bits (WRITE = 1). */
    flags: number;
  }
  | {
    kind: "fork";
    /** The child's uffd, already installed in OUR fd table by the read. */
    ufd: number;
  }
  | { kind: "remap"; from: number; to: number; len: number }
  | { kind: "remove"; start: number; end: number }
  | { kind: "unmap"; start: number; end: number }
  | {
    kind: "unknown";
    /** The raw event byte. */
    event: number;
  };

let buf: Scratch | undefined;
const READ_LEN: readonly bigint[] = Array.from(
  { length: MAX_MESSAGES + 1 },
  (_, i) => BigInt(i * UFFD_MSG_SIZE),
);

/**
 * Reads up to `max` (1..64, default 64) messages with ONE `read(2)` into a
 * reusable buffer and decodes them. Returns `[]` on EAGAIN (nothing
 * pending, e.g. the fault was already resolved). The fd must be
 * non-blocking, or this blocks the JS thread until a message arrives.
 *
 * Reading is what completes FORK/REMAP/REMOVE/UNMAP for the thread that
 * caused them (it is blocked until then), and a FORK message installs a new
 * fd into this process during the read: a full fd table makes the read
 * fail (EMFILE). Throws SysError for read errors and `RangeError` if a
 * 64-bit field is not a safe integer (impossible for user addresses on
 * x86_64; a fork fd decoded earlier in the same batch is then leaked).
 */
export function readMessages(
  fd: number,
  options: { max?: number } = {},
): UffdEvent[] {
  const max = options.max ?? MAX_MESSAGES;
  if (!Number.isInteger(max) || max < 1 || max > MAX_MESSAGES) {
    throw new RangeError(`readMessages: max must be 1..${MAX_MESSAGES}`);
  }
  const s = (buf ??= scratch(MAX_MESSAGES * UFFD_MSG_SIZE));
  let n: bigint;
  for (;;) {
    n = libc().read(fd, s.bytes, READ_LEN[max]);
    if (n >= 0n) break;
    const e = errno();
    if (e === E.EAGAIN) return [];
    if (e !== E.EINTR) throw new SysError("read(uffd)", e);
  }
  const bytes = Number(n);
  if (bytes % UFFD_MSG_SIZE !== 0) {
    throw new Error(
      `read(uffd) returned ${bytes} bytes, not a multiple of ${UFFD_MSG_SIZE}`,
    );
  }
  const events: UffdEvent[] = [];
  for (let off = 0; off < bytes; off += UFFD_MSG_SIZE) {
    events.push(decodeMessage(s.view, off));
  }
  return events;
}

/**
 * Decodes the `uffd_msg` at `offset` of `view` (layout: event u8 @0,
 * reserved @1..7, 24-byte arg union @8). Exported for tests and tools.
 */
export function decodeMessage(view: DataView, offset: number): UffdEvent {
  const event = view.getUint8(offset);
  const a = offset + 8;
  switch (event) {
    case UFFD_EVENT.PAGEFAULT:
      return {
        kind: "pagefault",
        flags: getU64(view, a, "pagefault.flags"),
        address: getU64(view, a + 8, "pagefault.address"),
      };
    case UFFD_EVENT.FORK:
      return { kind: "fork", ufd: view.getUint32(a, true) };
    case UFFD_EVENT.REMAP:
      return {
        kind: "remap",
        from: getU64(view, a, "remap.from"),
        to: getU64(view, a + 8, "remap.to"),
        len: getU64(view, a + 16, "remap.len"),
      };
    case UFFD_EVENT.REMOVE:
    case UFFD_EVENT.UNMAP:
      return {
        kind: event === UFFD_EVENT.REMOVE ? "remove" : "unmap",
        start: getU64(view, a, "remove.start"),
        end: getU64(view, a + 8, "remove.end"),
      };
    default:
      return { kind: "unknown", event };
  }
}
