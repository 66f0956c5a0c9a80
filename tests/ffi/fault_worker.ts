/**
 * The thread behind FaultThread (helpers.ts): touches memory on a thread
 * other than the test's, so it can block in a userfaultfd fault (or in a
 * non-cooperative event) while the test thread answers. Each command is answered with a
 * message once the operation has returned.
 *
 * @module
 */
import { MADV, madvise } from "../../ffi/mod.ts";
import { libc } from "../../ffi/libc.ts";

/** Commands understood by this worker. */
export type Command =
  | { op: "read"; address: number }
  | { op: "write"; address: number; value: number }
  | { op: "madvise"; address: number; len: number }
  | { op: "mremap"; from: number; len: number; to: number }
  | { op: "munmap"; address: number; len: number };

const SYS_MREMAP = 25n;
const MREMAP_MAYMOVE = 1n;
const MREMAP_FIXED = 2n;

const port = self as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((e: MessageEvent<Command>) => void) | null;
};

function pointer(address: number): Deno.PointerObject {
  return Deno.UnsafePointer.create(BigInt(address)) as Deno.PointerObject;
}

port.onmessage = (e) => {
  const c = e.data;
  switch (c.op) {
    case "read":
      port.postMessage(
        new Deno.UnsafePointerView(pointer(c.address)).getUint8(),
      );
      break;
    case "write":
      new Uint8Array(
        Deno.UnsafePointerView.getArrayBuffer(pointer(c.address), 1),
      )[0] = c.value;
      port.postMessage(c.value);
      break;
    case "madvise":
      madvise(c.address, { len: c.len, advice: MADV.DONTNEED });
      port.postMessage(0);
      break;
    case "mremap": {
      const r = libc().syscall(
        SYS_MREMAP,
        BigInt(c.from),
        BigInt(c.len),
        BigInt(c.len),
        MREMAP_MAYMOVE | MREMAP_FIXED,
        BigInt(c.to),
        0n,
      );
      port.postMessage(Number(r));
      break;
    }
    case "munmap":
      port.postMessage(libc().munmap(pointer(c.address), BigInt(c.len)));
      break;
  }
};
