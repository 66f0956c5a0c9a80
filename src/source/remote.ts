/**
 * Pages from CRIU's page server (`criu dump --lazy-pages` or `criu
 * page-server --lazy-pages` on the source host), over TCP.
 *
 * The protocol is a FIFO of 24-byte headers: `PS_IOV_GET` asks for
 * `nr_pages` pages of process `dst_id` (the plain image pid) at dump-time
 * address `vaddr`; the server answers each request, in order, with a
 * `PS_IOV_ADD_F|PE_PRESENT` header echoing the address and pid and a page
 * count that may be smaller than asked (its run of pages ended there), then
 * the pages. Requests are pipelined. The session ends with `PS_IOV_CLOSE`
 * and a 4-byte status.
 *
 * This client is non-blocking and synchronous: the daemon's loop calls
 * {@linkcode RemoteSource.onReady} when the socket is ready and gets the
 * completed requests back. Everything the server sends is checked against
 * what was asked, so a confused or hostile server is a clear error, never
 * a memory blow-up or a page delivered to the wrong place.
 *
 * @module
 */
import {
  allocPages,
  closeFd,
  connectTcp,
  Epoll,
  EPOLLIN,
  EPOLLOUT,
  type PageBuffer,
  recvSome,
  sendSome,
  setRecvLowat,
  shutdownWrite,
} from "../../ffi/mod.ts";
import {
  entryIndexAt,
  type ImageDir,
  PAGE_SIZE,
  PE_PARENT,
} from "../images/mod.ts";
import type { LocalSource } from "./local.ts";
import { TlsError, type TlsOptions, TlsSession } from "./tls.ts";
import type {
  Chunk,
  Completion,
  Fetch,
  PageSource,
  SourceStats,
} from "./types.ts";

/** Page-server commands (page-server-protocol.md §3). */
export const PS = {
  IOV_ADD_F: 6,
  IOV_GET: 7,
  IOV_CLOSE: 0x1023,
  FLAG_PRESENT: 4,
} as const;

const HEADER = 24;

/**
 * Most bytes to let queue up before the loop is woken for them. Each
 * wake-up of the uffd thread is a context switch on a machine whose other
 * core runs the restored process; reading a reply in pieces of at least
 * this size (when that many are sure to come) cuts them by the same factor.
 */
const LOWAT_MAX = 128 * 1024;

/** The page server failed or broke the protocol; names the peer. */
export class SourceError extends Error {}

/** How to reach the page server. */
export interface RemoteOptions {
  /** Host name or address, as for `criu lazy-pages --address`. */
  host: string;
  /** TCP port. */
  port: number;
  /** The images: entries with PE_PARENT are read from the parent chain. */
  dir: ImageDir;
  /** Local reads for those entries. */
  local: LocalSource;
  /** Background bytes allowed on the wire at once (faults always go). */
  backgroundInflight: number;
  /** Mutual X.509 TLS, negotiated right after connecting (`--tls`). */
  tls?: TlsOptions;
  /** Bound on the TLS handshake (default 30 s). */
  handshakeTimeoutMs?: number;
}

/**
 * Bytes in and out, plain or through TLS. Both are non-blocking: `null`
 * means "would block"; `recv` returns 0 at the end of the stream. After a
 * `send` that returned null the same bytes must lead the next `send` (a
 * TLS record was already sealed): the send queue guarantees that.
 */
interface Transport {
  send(data: Uint8Array): number | null;
  recv(into: Uint8Array): number | null;
  /**
   * Ends our direction for good (TLS: close_notify first), so that the
   * peer sees the end of the stream right away; receiving goes on. Gives
   * up at `deadline` (a Date.now() value).
   */
  finish(deadline: number): void;
  /**
   * Wake the loop only once `bytes` are queued (SO_RCVLOWAT), where the
   * bytes on the socket are the payload's (not with TLS).
   */
  lowat?(bytes: number): void;
  /** Frees what the transport holds; never closes the fd. */
  dispose(): void;
}

function plain(fd: number): Transport {
  return {
    send: (d) => sendSome(fd, d),
    recv: (b) => recvSome(fd, b),
    finish: () => shutdownWrite(fd),
    lowat: (bytes) => setRecvLowat(fd, bytes),
    dispose: () => {},
  };
}

/**
 * TLS over `fd`: handshakes (bounded in time), then moves records. recv()
 * is called until it returns null, which also empties what GnuTLS
 * decrypted ahead: epoll cannot see those bytes.
 */
function tls(
  fd: number,
  options: { tls: TlsOptions; timeoutMs: number },
): Transport {
  const s = TlsSession.client(fd, options.tls);
  try {
    const ep = new Epoll();
    try {
      const end = Date.now() + options.timeoutMs;
      for (let step = s.handshake(); step !== "done"; step = s.handshake()) {
        const left = end - Date.now();
        if (left <= 0) throw new Error("TLS handshake timed out");
        const events = step === "want-read" ? EPOLLIN : EPOLLOUT;
        try {
          ep.modify(fd, { events, token: 0 });
        } catch {
          ep.add(fd, { events, token: 0 });
        }
        ep.wait(left, 1);
      }
    } finally {
      ep.close();
    }
  } catch (e) {
    s.close();
    throw e;
  }
  return {
    send: (d) => s.send(d),
    recv: (b) => s.recv(b),
    finish: (deadline) => {
      while (s.bye() !== "done") {
        if (Date.now() > deadline) {
          throw new Error("TLS close_notify timed out");
        }
        nap();
      }
      shutdownWrite(fd);
    },
    dispose: () => s.close(),
  };
}

interface Outstanding<T> {
  tag: T;
  pid: number;
  image: number;
  pages: number;
  urgent: boolean;
  buf?: PageBuffer;
  /** Pages the reply announced; 0 until its header arrived. */
  replyPages: number;
  /** Payload bytes received so far. */
  got: number;
}

/** A page-server client. */
export class RemoteSource<T = unknown> implements PageSource<T> {
  readonly kind = "remote";
  /** The connected socket, for the daemon's epoll set. */
  readonly fd: number;
  /** The server as "address:port", for messages. */
  readonly peer: string;
  readonly #dir: ImageDir;
  readonly #local: LocalSource;
  readonly #budget: number;
  readonly #io: Transport;
  readonly #queue: Outstanding<T>[] = [];
  #out = new Uint8Array(64 * HEADER);
  #outLen = 0;
  readonly #head = new Uint8Array(HEADER);
  #headGot = 0;
  #backgroundBytes = 0;
  #lowat = 1;
  #closed = false;
  readonly #pool = new Map<number, PageBuffer[]>();
  #requests = 0;
  #pagesAsked = 0;
  #pagesReceived = 0;

  private constructor(
    conn: { fd: number; peer: string; io: Transport },
    options: RemoteOptions,
  ) {
    this.fd = conn.fd;
    this.peer = conn.peer;
    this.#io = conn.io;
    this.#dir = options.dir;
    this.#local = options.local;
    this.#budget = options.backgroundInflight;
  }

  /** Connects (blocking) to the page server. Throws SourceError. */
  static connect<T>(options: RemoteOptions): RemoteSource<T> {
    let conn;
    try {
      conn = connectTcp(options.host, options.port);
    } catch (e) {
      throw new SourceError(
        `cannot connect to ${options.host} port ${options.port}: ${
          (e as Error).message
        }`,
      );
    }
    let io: Transport;
    try {
      io = options.tls
        ? tls(conn.fd, {
          tls: options.tls,
          timeoutMs: options.handshakeTimeoutMs ?? 30_000,
        })
        : plain(conn.fd);
    } catch (e) {
      closeFd(conn.fd);
      const what = e instanceof TlsError ? "" : "TLS: ";
      throw new SourceError(
        `page server ${conn.peer}: ${what}${(e as Error).message}`,
      );
    }
    return new RemoteSource<T>({ ...conn, io }, options);
  }

  /**
   * Queues a request, or reads it from the parent chain when its pagemap
   * entry says the data is there (PE_LAZY|PE_PARENT: the server never had
   * those pages, and asking for them would end the session).
   */
  fetch(request: Fetch, tag: T): Chunk | undefined {
    if (this.#closed) throw new SourceError(`page server ${this.peer}: closed`);
    if (this.#inParent(request)) return this.#local.fetch(request);
    const pages = request.len / PAGE_SIZE;
    this.#queue.push({
      tag,
      pid: request.pid,
      image: request.image,
      pages,
      urgent: request.urgent,
      replyPages: 0,
      got: 0,
    });
    if (!request.urgent) this.#backgroundBytes += request.len;
    this.#requests++;
    this.#pagesAsked += pages;
    this.#put(PS.IOV_GET, { pages, image: request.image, pid: request.pid });
    this.#flush();
    return undefined;
  }

  /** Faults always; background while less than the budget is on the wire. */
  canFetch(urgent: boolean): boolean {
    return urgent || this.#backgroundBytes < this.#budget;
  }

  /** Whether requests wait to be sent (the daemon then polls for EPOLLOUT). */
  get wantsWrite(): boolean {
    return this.#outLen > 0;
  }

  /** Requests sent and not yet answered completely. */
  get outstanding(): number {
    return this.#queue.length;
  }

  /**
   * Sends what is queued and reads what arrived; returns the requests that
   * are complete. Throws SourceError when the server closed the connection,
   * failed, or sent something that does not answer the oldest request.
   */
  onReady(): Completion<T>[] {
    this.#flush();
    const done: Completion<T>[] = [];
    for (;;) {
      const o = this.#queue[0];
      if (this.#headGot < HEADER) {
        const n = this.#recv(this.#head.subarray(this.#headGot), o);
        if (n === null) break;
        this.#headGot += n;
        if (this.#headGot < HEADER) continue;
        if (!o) throw this.#bad("a reply nobody asked for");
        this.#checkHeader(o);
        o.buf = this.#take(o.replyPages * PAGE_SIZE);
      }
      const want = o!.replyPages * PAGE_SIZE;
      if (o!.got < want) {
        const n = this.#recv(o!.buf!.bytes.subarray(o!.got, want), o);
        if (n === null) break;
        o!.got += n;
        if (o!.got < want) continue;
      }
      this.#queue.shift();
      this.#headGot = 0;
      if (!o!.urgent) this.#backgroundBytes -= o!.pages * PAGE_SIZE;
      this.#pagesReceived += o!.replyPages;
      const buf = o!.buf!;
      done.push({
        tag: o!.tag,
        chunk: {
          address: buf.address,
          bytes: buf.bytes.subarray(0, want),
          release: () => this.#give(buf),
        },
      });
    }
    this.#tuneLowat();
    return done;
  }

  /**
   * Sets the socket's low-water mark to the bytes that are certain to
   * come: the rest of the reply being read, and for every other
   * outstanding request a header and one page (replies may be short, but
   * never empty). Never more, so the loop is never left waiting for bytes
   * that will not arrive; the end of the stream wakes it regardless.
   */
  #tuneLowat(): void {
    if (!this.#io.lowat) return;
    let sure = 0;
    for (let i = 0; i < this.#queue.length && sure < LOWAT_MAX; i++) {
      if (i > 0) sure += HEADER + PAGE_SIZE;
      else if (this.#headGot < HEADER) {
        sure += HEADER - this.#headGot + PAGE_SIZE;
      } else {
        const o = this.#queue[0];
        sure += o.replyPages * PAGE_SIZE - o.got;
      }
    }
    const want = Math.max(1, Math.min(LOWAT_MAX, sure));
    if (want === this.#lowat) return;
    try {
      this.#io.lowat(want);
      this.#lowat = want;
    } catch (e) {
      throw new SourceError(
        `page server ${this.peer}: ${(e as Error).message}`,
      );
    }
  }

  /** Requests and pages asked for and received, for the statistics. */
  stats(): SourceStats {
    const local = this.#local.stats();
    return {
      ...local,
      kind: this.kind,
      remoteRequests: this.#requests,
      remotePages: this.#pagesAsked,
      remotePagesReceived: this.#pagesReceived,
    };
  }

  /**
   * Ends the session: PS_IOV_CLOSE, the end of our stream, the server's
   * 4-byte status, the end of its stream, close. Waits at most `timeoutMs`
   * in all; a server already gone is fine at this point (every page was
   * delivered).
   *
   * Why end our stream before the status arrives: CRIU's server writes the
   * status into a TCP_CORKed socket and then blocks reading until we close
   * (it wants the client to close first, against TIME_WAIT; any byte after
   * PS_IOV_CLOSE is "Unexpected data", a failed transfer). Nothing uncorks
   * the status until the kernel's 200 ms cork ceiling, unless the server
   * closes: so a client that waits for the status before closing always
   * waits 200 ms (CRIU's own daemon does). Half-closing right after the
   * request lets the server finish and close, which sends the status at
   * once; we still read it and the server's end of stream, so our close
   * finds nothing unread and resets nothing. With TLS our close_notify goes
   * first: the server's gnutls_bye waits for it before the final read.
   *
   * Returns the status word (CRIU always sends 0), or undefined when none
   * arrived in time.
   */
  close(options: { timeoutMs?: number } = {}): number | undefined {
    if (this.#closed) return undefined;
    this.#closed = true;
    let result: number | undefined;
    try {
      this.#outLen = 0;
      this.#put(PS.IOV_CLOSE, { pages: 0, image: 0, pid: 0 });
      const end = Date.now() + (options.timeoutMs ?? 5000);
      while (this.#outLen > 0 && Date.now() < end) {
        this.#flush();
        if (this.#outLen > 0) nap();
      }
      this.#io.finish(end);
      const status = new Uint8Array(4);
      let got = 0;
      while (got < 4 && Date.now() < end) {
        const n = this.#io.recv(status.subarray(got));
        if (n === 0) break;
        if (n === null) nap();
        else got += n;
      }
      if (got === 4) result = new DataView(status.buffer).getInt32(0, true);
      const sink = new Uint8Array(256);
      while (Date.now() < end) {
        const n = this.#io.recv(sink);
        if (n === 0) break;
        if (n === null) nap();
      }
    } catch {
      // The server may have gone away after the last reply; nothing is
      // owed to it any more.
    } finally {
      this.#release();
    }
    return result;
  }

  /** Closes the connection without the closing exchange (after a failure). */
  abort(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#release();
  }

  #release(): void {
    this.#io.dispose();
    closeFd(this.fd);
    for (const list of this.#pool.values()) for (const b of list) b.free();
    this.#pool.clear();
    this.#local.close();
  }

  #inParent(r: Fetch): boolean {
    const entries = this.#dir.pagemap(r.pid).entries;
    const e = entries[entryIndexAt(entries, r.image)];
    return e !== undefined && e.vaddr <= r.image &&
      (e.flags & PE_PARENT) !== 0;
  }

  #put(cmd: number, h: { pages: number; image: number; pid: number }): void {
    if (this.#outLen + HEADER > this.#out.length) {
      const bigger = new Uint8Array(this.#out.length * 2);
      bigger.set(this.#out.subarray(0, this.#outLen));
      this.#out = bigger;
    }
    const v = new DataView(this.#out.buffer, this.#outLen, HEADER);
    v.setUint32(0, cmd, true);
    v.setUint32(4, h.pages, true);
    v.setBigUint64(8, BigInt(h.image), true);
    v.setBigUint64(16, BigInt(h.pid), true);
    this.#outLen += HEADER;
  }

  #flush(): void {
    let off = 0;
    try {
      while (off < this.#outLen) {
        const n = this.#io.send(this.#out.subarray(off, this.#outLen));
        if (n === null) break;
        off += n;
      }
    } catch (e) {
      throw new SourceError(
        `page server ${this.peer}: sending requests failed: ${
          (e as Error).message
        }`,
      );
    }
    this.#out.copyWithin(0, off, this.#outLen);
    this.#outLen -= off;
  }

  #recv(into: Uint8Array, o: Outstanding<T> | undefined): number | null {
    let n: number | null;
    try {
      n = this.#io.recv(into);
    } catch (e) {
      throw new SourceError(
        `page server ${this.peer}: ${(e as Error).message}${this.#waiting(o)}`,
      );
    }
    if (n === 0) {
      throw new SourceError(
        `page server ${this.peer} closed the connection${this.#waiting(o)}`,
      );
    }
    return n;
  }

  #waiting(o: Outstanding<T> | undefined): string {
    return o
      ? ` while ${this.#queue.length} request(s) were outstanding (oldest: ${o.pages} pages of pid ${o.pid} at 0x${
        o.image.toString(16)
      })`
      : "";
  }

  /** A reply must answer the oldest request: same pid and address, 1..n pages. */
  #checkHeader(o: Outstanding<T>): void {
    const v = new DataView(this.#head.buffer);
    const cmd = v.getUint32(0, true);
    const pages = v.getUint32(4, true);
    const vaddr = v.getBigUint64(8, true);
    const pid = v.getBigUint64(16, true);
    if (
      (cmd & 0xffff) !== PS.IOV_ADD_F || ((cmd >>> 16) & PS.FLAG_PRESENT) === 0
    ) {
      throw this.#bad(`a reply with command 0x${cmd.toString(16)}`);
    }
    if (pid !== BigInt(o.pid) || vaddr !== BigInt(o.image)) {
      throw this.#bad(
        `a reply for pid ${pid} at 0x${
          vaddr.toString(16)
        } to a request for pid ${o.pid} at 0x${o.image.toString(16)}`,
      );
    }
    if (pages < 1 || pages > o.pages) {
      throw this.#bad(
        `${pages} pages in reply to a request for ${o.pages} at 0x${
          o.image.toString(16)
        }`,
      );
    }
    o.replyPages = pages;
  }

  #bad(what: string): SourceError {
    return new SourceError(`page server ${this.peer} sent ${what}`);
  }

  /**
   * A buffer of at least `size` bytes. Sizes are rounded up to powers of
   * two so that the pool stays a handful of size classes, whatever lengths
   * short replies and range ends produce; the pool holds at most what was
   * in flight at once.
   */
  #take(size: number): PageBuffer {
    let cls = PAGE_SIZE;
    while (cls < size) cls *= 2;
    return this.#pool.get(cls)?.pop() ?? allocPages(cls);
  }

  #give(buf: PageBuffer): void {
    if (this.#closed) return buf.free();
    const list = this.#pool.get(buf.size);
    if (list) list.push(buf);
    else this.#pool.set(buf.size, [buf]);
  }
}

/**
 * Sleeps a millisecond. Only the closing exchange uses it: it runs on the
 * uffd worker after every process is done, so blocking it is harmless.
 */
function nap(): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
}
