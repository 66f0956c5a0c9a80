/**
 * epoll and eventfd: the daemon parks in a synchronous `epoll_wait` over
 * all uffds, the restorer socket and a control eventfd.
 *
 * `struct epoll_event` is PACKED on x86_64: 12 bytes, `events` u32 @0 and
 * `data` u64 @4 (not 16 bytes with `data` @8 as on most other
 * architectures). `data` carries the caller's numeric token.
 *
 * @module
 */
import { check, E, errno, SysError } from "./errno.ts";
import { libc } from "./libc.ts";
import {
  allocPages,
  getU64,
  type PageBuffer,
  type Scratch,
  scratch,
  setU64,
} from "./buffer.ts";
import { O, readFd, writeFd } from "./process.ts";

/** epoll event bits. */
export const EPOLLIN = 0x001;
/** Writable. */
export const EPOLLOUT = 0x004;
/** Error condition (always reported). */
export const EPOLLERR = 0x008;
/** Hang-up (always reported). */
export const EPOLLHUP = 0x010;
/** Peer shut down its writing half. */
export const EPOLLRDHUP = 0x2000;

const EPOLL_CLOEXEC = O.CLOEXEC;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
const EVENT_SIZE = 12;
/** Most events one {@linkcode Epoll.wait} returns. */
export const MAX_EVENTS = 256;

/** One ready fd: the token given to {@linkcode Epoll.add} and the ready bits. */
export interface EpollReady {
  /** The caller's token. */
  token: number;
  /** EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP/EPOLLRDHUP bits. */
  events: number;
}

/** Registration of an fd: interest bits and the token reported back. */
export interface EpollInterest {
  /** Interest bits, e.g. `EPOLLIN | EPOLLRDHUP`. */
  events: number;
  /** Any safe non-negative integer, returned as `token` by wait. */
  token: number;
}

let ctlEvent: Scratch | undefined;

/** An epoll instance (close-on-exec). Close it with {@linkcode Epoll.close}. */
export class Epoll {
  /** The epoll fd. */
  readonly fd: number;
  // Event arrays in mmap'd memory (the async one is written by another
  // thread while JS runs); freed by close().
  #events: PageBuffer;
  #eventsView: DataView;
  #asyncEvents: PageBuffer | undefined;
  #asyncBusy = false;
  #closed = false;

  /** Creates the epoll fd. Throws SysError. */
  constructor() {
    this.#events = allocPages(MAX_EVENTS * EVENT_SIZE);
    this.#eventsView = new DataView(this.#events.bytes.buffer);
    try {
      this.fd = check(libc().epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
    } catch (e) {
      this.#events.free();
      throw e;
    }
  }

  #open(): void {
    if (this.#closed) throw new Error("Epoll used after close()");
  }

  #ctl(op: number, fd: number, interest: EpollInterest | null, call: string) {
    this.#open();
    const s = (ctlEvent ??= scratch(EVENT_SIZE));
    s.view.setUint32(0, interest?.events ?? 0, true);
    setU64(s.view, 4, interest?.token ?? 0);
    check(libc().epoll_ctl(this.fd, op, fd, s.pointer), call);
  }

  /** Adds `fd` (EPOLL_CTL_ADD). Throws SysError (EEXIST if already added). */
  add(fd: number, interest: EpollInterest): void {
    this.#ctl(EPOLL_CTL_ADD, fd, interest, "epoll_ctl(ADD)");
  }

  /** Changes `fd`'s interest and token (EPOLL_CTL_MOD). Throws SysError. */
  modify(fd: number, interest: EpollInterest): void {
    this.#ctl(EPOLL_CTL_MOD, fd, interest, "epoll_ctl(MOD)");
  }

  /**
   * Removes `fd` (EPOLL_CTL_DEL). Closing an fd removes it implicitly —
   * but only once every duplicate of it is closed, so remove explicitly.
   * Throws SysError (ENOENT if not added).
   */
  remove(fd: number): void {
    this.#ctl(EPOLL_CTL_DEL, fd, null, "epoll_ctl(DEL)");
  }

  /**
   * Synchronous `epoll_wait`: blocks the JS thread up to `timeoutMs` (-1 =
   * forever, 0 = poll) and returns up to `max` (default and limit
   * {@linkcode MAX_EVENTS}) ready fds. EINTR returns `[]`. Throws
   * SysError.
   */
  wait(timeoutMs: number, max: number = MAX_EVENTS): EpollReady[] {
    this.#open();
    const n = libc().epoll_wait(
      this.fd,
      this.#events.pointer,
      clampMax(max),
      timeoutMs,
    );
    if (n < 0) {
      const e = errno();
      if (e === E.EINTR) return [];
      throw new SysError("epoll_wait", e);
    }
    return decode(this.#eventsView, n);
  }

  /**
   * Like {@linkcode Epoll.wait}, but runs `epoll_wait` on a Deno worker thread so
   * the JS event loop keeps running (timers, promises). At most one
   * `waitAsync` per instance at a time (throws otherwise); do not close the
   * instance while it runs. Because that thread's errno is unreadable, a
   * failure is re-diagnosed with a synchronous zero-timeout wait (EINTR
   * then simply yields whatever is ready now).
   */
  async waitAsync(
    timeoutMs: number,
    max: number = MAX_EVENTS,
  ): Promise<EpollReady[]> {
    this.#open();
    if (this.#asyncBusy) throw new Error("Epoll.waitAsync already pending");
    this.#asyncBusy = true;
    try {
      // Separate memory from wait(): the worker thread writes into it while
      // synchronous waits may run on the JS thread.
      const s = (this.#asyncEvents ??= allocPages(MAX_EVENTS * EVENT_SIZE));
      const n = await libc().epoll_wait_nonblocking(
        this.fd,
        s.pointer,
        clampMax(max),
        timeoutMs,
      );
      if (n < 0) return this.wait(0, max);
      return decode(new DataView(s.bytes.buffer), n);
    } finally {
      this.#asyncBusy = false;
    }
  }

  /**
   * Closes the epoll fd and frees its event arrays; later calls throw.
   * Idempotent. Throws SysError.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#events.free();
    this.#asyncEvents?.free();
    check(libc().close(this.fd), "close(epoll)");
  }
}

function clampMax(max: number): number {
  if (!Number.isInteger(max) || max < 1 || max > MAX_EVENTS) {
    throw new RangeError(`epoll: max must be 1..${MAX_EVENTS}`);
  }
  return max;
}

function decode(view: DataView, n: number): EpollReady[] {
  const out: EpollReady[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const off = i * EVENT_SIZE;
    out[i] = {
      token: getU64(view, off + 4, "epoll_event.data"),
      events: view.getUint32(off, true),
    };
  }
  return out;
}

/** `eventfd` flags. */
export const EFD = {
  CLOEXEC: O.CLOEXEC,
  NONBLOCK: O.NONBLOCK,
  SEMAPHORE: 1,
} as const;

/**
 * Creates an eventfd (default flags: close-on-exec and non-blocking).
 * Throws SysError.
 */
export function eventfd(
  initval = 0,
  flags: number = EFD.CLOEXEC | EFD.NONBLOCK,
): number {
  return check(libc().eventfd(initval, flags), "eventfd");
}

const counter = new Uint8Array(8);
const counterView = new DataView(counter.buffer);

/**
 * Adds `n` (default 1) to an eventfd's counter, making it readable.
 * Returns false if the counter would overflow on a non-blocking eventfd
 * (EAGAIN). Throws SysError.
 */
export function eventfdWrite(fd: number, n = 1): boolean {
  setU64(counterView, 0, n);
  return writeFd(fd, counter) !== null;
}

/**
 * Reads and resets an eventfd's counter. Returns the counter, or 0 if it
 * was 0 on a non-blocking eventfd (EAGAIN). Throws SysError.
 */
export function eventfdRead(fd: number): number {
  const n = readFd(fd, counter);
  if (n === null) return 0;
  if (n !== 8) throw new Error(`eventfd read returned ${n} bytes`);
  return getU64(counterView, 0, "eventfd counter");
}
