/**
 * Memory whose address is handed to the kernel: page-aligned `mmap`
 * buffers and small reusable scratch structs, plus exact 64-bit field
 * access.
 *
 * Why `mmap` and not `new Uint8Array(n)`: the kernel keeps using some
 * addresses after the JS expression that produced them is gone, e.g. the
 * `src` field of `uffdio_copy`, or the `iovec`/control pointers inside a
 * `msghdr`. A JS-allocated buffer is only guaranteed to stay put (and
 * alive) while V8 sees a reference to it; in earlier experiments a buffer
 * whose address had been written into a struct was collected and the ioctl
 * failed with EFAULT (V8 may also keep small typed arrays on its moving
 * heap). `mmap`'d memory never moves and lives until `munmap`, and a
 * {@linkcode PageBuffer} keeps strong references to both the pointer and
 * the `Uint8Array` view for as long as it is reachable.
 *
 * @module
 */
import { check } from "./errno.ts";
import { libc } from "./libc.ts";

/** Page size on x86_64. */
export const PAGE_SIZE = 4096;

const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/** `madvise` advice values. */
export const MADV = {
  /** Drop the pages; anonymous memory reads back as zeros. */
  DONTNEED: 4,
  /** Read-ahead hint. */
  WILLNEED: 3,
  /** Free the backing store (shmem/tmpfs); anonymous: like DONTNEED. */
  REMOVE: 9,
} as const;

const TWO_32 = 2 ** 32;

/**
 * Writes a non-negative safe integer as a little-endian u64. Done as two
 * u32 halves so no `BigInt` is allocated on the fault path; exact for every
 * safe integer.
 */
export function setU64(view: DataView, offset: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(
      `u64 field: ${value} is not a safe non-negative integer`,
    );
  }
  view.setUint32(offset, value % TWO_32, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_32), true);
}

/**
 * Reads a little-endian u64 as a number; throws `RangeError` if it is not
 * a safe integer (never truncates or rounds). Equivalent to
 * `Number(view.getBigUint64(offset, true))` plus a `Number.isSafeInteger`
 * check, without allocating a `BigInt`: the value is safe exactly when the
 * high half is below 2^21.
 */
export function getU64(
  view: DataView,
  offset: number,
  what = "u64 field",
): number {
  const hi = view.getUint32(offset + 4, true);
  if (hi >= 0x20_0000) {
    throw new RangeError(
      `${what}: ${view.getBigUint64(offset, true)} is not a safe integer`,
    );
  }
  return hi * TWO_32 + view.getUint32(offset, true);
}

/**
 * Reads a little-endian s64 as a number (e.g. `uffdio_copy.copy`, which is
 * a byte count or a negated errno); throws `RangeError` if unsafe.
 */
export function getI64(
  view: DataView,
  offset: number,
  what = "s64 field",
): number {
  const hi = view.getInt32(offset + 4, true);
  const n = hi * TWO_32 + view.getUint32(offset, true);
  if (hi >= 0x20_0000 || hi < -0x20_0000 || !Number.isSafeInteger(n)) {
    throw new RangeError(
      `${what}: ${view.getBigInt64(offset, true)} is not a safe integer`,
    );
  }
  return n;
}

function mapAnonymous(size: number): Deno.PointerObject {
  const p = libc().mmap(
    null,
    BigInt(size),
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0n,
  );
  if (p === null || Deno.UnsafePointer.value(p) === MAP_FAILED) {
    check(-1, "mmap");
  }
  return p as Deno.PointerObject;
}

/**
 * A page-aligned anonymous private mapping with a `Uint8Array` view and
 * its address. Allocate with {@linkcode allocPages}; release with
 * {@linkcode PageBuffer.free}.
 */
export class PageBuffer {
  /** The mapping's start as a pointer object, for `pointer` FFI parameters. */
  readonly pointer: Deno.PointerObject;
  /** The mapping's start address as a (safe) number, e.g. for `uffdio_copy.src`. */
  readonly address: number;
  /** Length in bytes, a multiple of {@linkcode PAGE_SIZE}. */
  readonly size: number;
  #buffer: ArrayBuffer;
  #bytes: Uint8Array;
  #freed = false;

  /** Use {@linkcode allocPages}. */
  constructor(pointer: Deno.PointerObject, size: number) {
    this.pointer = pointer;
    this.address = Number(Deno.UnsafePointer.value(pointer));
    this.size = size;
    // An ArrayBuffer over foreign memory: V8 never frees or moves it.
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, size);
    this.#bytes = new Uint8Array(this.#buffer);
  }

  /**
   * The whole mapping as bytes. After {@linkcode PageBuffer.free} this (and every view
   * derived from it) has length 0.
   */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /** Whether {@linkcode PageBuffer.free} has been called. */
  get freed(): boolean {
    return this.#freed;
  }

  /**
   * Unmaps the memory. The `ArrayBuffer` is detached first, so any view
   * still held somewhere reads as empty instead of touching unmapped memory
   * (which would be a SIGSEGV, not an exception). Idempotent.
   */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#buffer.transfer(0); // detaches: stale views become length 0
    check(libc().munmap(this.pointer, BigInt(this.size)), "munmap");
  }
}

/** Maps `size` bytes (rounded up to whole pages) of zeroed anonymous memory. */
export function allocPages(size: number): PageBuffer {
  if (!Number.isSafeInteger(size) || size <= 0) {
    throw new RangeError(`allocPages: bad size ${size}`);
  }
  const rounded = Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
  return new PageBuffer(mapAnonymous(rounded), rounded);
}

/**
 * `madvise(2)` on `[address, address + len)`; `address` must be page
 * aligned. Throws `SysError`.
 */
export function madvise(
  address: number,
  options: { len: number; advice: number },
): void {
  const p = Deno.UnsafePointer.create(BigInt(address));
  check(libc().madvise(p, BigInt(options.len), options.advice), "madvise");
}

/** A small fixed-address struct, allocated once and reused on every call. */
export interface Scratch {
  /** Its address as a pointer object, for `pointer` FFI parameters. */
  readonly pointer: Deno.PointerObject;
  /** Its address as a number (for pointers stored inside other structs). */
  readonly address: number;
  /** Its bytes. */
  readonly bytes: Uint8Array;
  /** A DataView over exactly its bytes. */
  readonly view: DataView;
}

let arena: PageBuffer | undefined;
let arenaUsed = 0;

/**
 * Carves a zeroed, 16-byte aligned struct of `size` bytes (at most one
 * page) out of a process-lifetime arena of `mmap`'d pages. Meant to be
 * called once per struct, at module or object set-up; never freed.
 * Callers own their struct exclusively; the synchronous wrappers are not
 * reentrant, so one struct per call site is enough.
 */
export function scratch(size: number): Scratch {
  if (!Number.isSafeInteger(size) || size <= 0 || size > PAGE_SIZE) {
    throw new RangeError(`scratch: bad size ${size}`);
  }
  if (arena === undefined || arenaUsed + size > arena.size) {
    arena = allocPages(PAGE_SIZE);
    arenaUsed = 0;
  }
  const offset = arenaUsed;
  arenaUsed += Math.ceil(size / 16) * 16;
  const bytes = arena.bytes.subarray(offset, offset + size);
  return {
    pointer: Deno.UnsafePointer.offset(
      arena.pointer,
      offset,
    ) as Deno.PointerObject,
    address: arena.address + offset,
    bytes,
    view: new DataView(bytes.buffer, bytes.byteOffset, size),
  };
}
