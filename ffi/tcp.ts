/**
 * TCP client sockets for the page-server connection: name resolution with
 * the C library's `getaddrinfo` (so /etc/hosts, IPv6 and whatever else the
 * host is configured with apply, as for CRIU), a non-blocking connect to
 * each address in turn bounded by a timeout, and non-blocking `send` and
 * `recv` for the daemon's epoll loop.
 *
 * Deno's own TCP API hides the fd, and lazyd needs the fd (epoll, and
 * GnuTLS's transport for `--tls`), hence plain `socket`/`connect` here.
 *
 * @module
 */
import { check, E, errno, SysError } from "./errno.ts";
import { libc } from "./libc.ts";
import { type Scratch, scratch } from "./buffer.ts";
import { Epoll, EPOLLOUT } from "./epoll.ts";
import { SOCK_CLOEXEC, SOCK_NONBLOCK, SOL_SOCKET } from "./socket.ts";

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SO_ERROR = 4;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const SHUT_WR = 1;
const SO_RCVLOWAT = 18;
/** `EINPROGRESS` (not in {@linkcode E}): a non-blocking connect is under way. */
const EINPROGRESS = 115;
// struct addrinfo on x86_64: ai_flags@0, ai_family@4, ai_socktype@8,
// ai_protocol@12, ai_addrlen@16 (u32, then padding), ai_addr@24,
// ai_canonname@32, ai_next@40; 48 bytes.
const ADDRINFO_SIZE = 48;

const encoder = new TextEncoder();

function describeAddr(view: Deno.UnsafePointerView, len: number): string {
  const family = view.getUint16(0);
  const port = (view.getUint8(2) << 8) | view.getUint8(3);
  if (family === AF_INET && len >= 8) {
    return `${view.getUint8(4)}.${view.getUint8(5)}.${view.getUint8(6)}.${
      view.getUint8(7)
    }:${port}`;
  }
  if (family === AF_INET6 && len >= 24) {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) {
      groups.push(
        ((view.getUint8(8 + 2 * i) << 8) | view.getUint8(9 + 2 * i)).toString(
          16,
        ),
      );
    }
    return `[${groups.join(":")}]:${port}`;
  }
  return `family ${family}`;
}

let soError: Scratch | undefined; // int @0, socklen_t @4

function pendingError(fd: number): number {
  const s = (soError ??= scratch(8));
  s.view.setInt32(0, 0, true);
  s.view.setUint32(4, 4, true);
  check(
    libc().getsockopt(
      fd,
      SOL_SOCKET,
      SO_ERROR,
      s.pointer,
      Deno.UnsafePointer.offset(s.pointer, 4),
    ),
    "getsockopt(SO_ERROR)",
  );
  return s.view.getInt32(0, true);
}

/** Waits until a non-blocking connect on `fd` finishes; throws SysError on failure or timeout. */
function awaitConnect(fd: number, timeoutMs: number, what: string): void {
  const ep = new Epoll();
  try {
    ep.add(fd, { events: EPOLLOUT, token: 0 });
    const deadline = timeoutMs < 0 ? Infinity : performance.now() + timeoutMs;
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) throw new SysError(what, E.ETIMEDOUT);
      const wait = left === Infinity ? -1 : Math.ceil(left);
      if (ep.wait(wait, 1).length > 0) break; // [] = timeout or EINTR
    }
  } finally {
    ep.close();
  }
  const e = pendingError(fd);
  if (e !== 0) throw new SysError(what, e);
}

/** A resolved address of a host. */
export interface TcpAddress {
  /** AF_INET or AF_INET6. */
  family: number;
  /** The `struct sockaddr_in`/`sockaddr_in6`, as `connect` takes it. */
  sockaddr: Uint8Array;
  /** "a.b.c.d:port" or "[v6]:port", for messages. */
  name: string;
}

/**
 * Resolves `host` (a name, an IPv4 or an IPv6 literal) and `port` with
 * `getaddrinfo`, in the order it returns them. Throws Error naming the host.
 */
export function resolveTcp(host: string, port: number): TcpAddress[] {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`bad port ${port}`);
  }
  const hints = new Uint8Array(ADDRINFO_SIZE);
  new DataView(hints.buffer).setInt32(8, SOCK_STREAM, true);
  const res = new BigUint64Array(1);
  const rc = libc().getaddrinfo(
    encoder.encode(host + "\0"),
    encoder.encode(String(port) + "\0"),
    hints,
    new Uint8Array(res.buffer),
  );
  if (rc !== 0) {
    const msg = libc().gai_strerror(rc);
    throw new Error(
      `cannot resolve ${host}: ${
        msg ? Deno.UnsafePointerView.getCString(msg) : `EAI ${rc}`
      }`,
    );
  }
  const head = Deno.UnsafePointer.create(res[0]);
  const out: TcpAddress[] = [];
  try {
    for (let ai = head; ai !== null;) {
      const v = new Deno.UnsafePointerView(ai);
      const family = v.getInt32(4);
      const len = v.getUint32(16);
      const addr = v.getPointer(24);
      ai = v.getPointer(40);
      if (addr === null || (family !== AF_INET && family !== AF_INET6)) {
        continue;
      }
      out.push({
        family,
        sockaddr: new Uint8Array(
          Deno.UnsafePointerView.getArrayBuffer(addr, len).slice(0),
        ),
        name: describeAddr(new Deno.UnsafePointerView(addr), len),
      });
    }
  } finally {
    libc().freeaddrinfo(head);
  }
  return out;
}

/** A connected TCP socket. */
export interface TcpConnection {
  /** The socket: non-blocking, close-on-exec, TCP_NODELAY set. */
  fd: number;
  /** The peer as "address:port" ("[v6]:port" for IPv6), for messages. */
  peer: string;
}

/**
 * Connects to `host` and `port`, trying every address `getaddrinfo`
 * returns in order, like CRIU. Each connect is non-blocking and waits at
 * most `timeoutMs` (default -1: as long as the kernel keeps trying, about
 * two minutes for an unanswered SYN, like CRIU's blocking connect). Throws
 * SysError (`call` names the address, e.g. `connect([::1]:27)`) when the
 * only address fails, Error listing every address's failure otherwise.
 */
export function connectTcp(
  host: string,
  port: number,
  options: { timeoutMs?: number } = {},
): TcpConnection {
  const addrs = resolveTcp(host, port);
  const failures: SysError[] = [];
  for (const a of addrs) {
    const what = `connect(${a.name})`;
    const fd = check(
      libc().socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
      "socket",
    );
    try {
      if (libc().connect(fd, a.sockaddr, a.sockaddr.length) !== 0) {
        const e = errno();
        // EINTR: the connect goes on in the background, as with EINPROGRESS.
        if (e !== EINPROGRESS && e !== E.EINTR) throw new SysError(what, e);
        awaitConnect(fd, options.timeoutMs ?? -1, what);
      }
      const one = new Uint8Array(new Int32Array([1]).buffer);
      libc().setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
      return { fd, peer: a.name };
    } catch (e) {
      libc().close(fd);
      if (!(e instanceof SysError)) throw e;
      failures.push(e);
    }
  }
  if (failures.length === 1) throw failures[0];
  throw new Error(
    `cannot connect to ${host} port ${port}: ${
      failures.map((f) => f.message).join("; ") || "no address"
    }`,
  );
}

/**
 * Non-blocking `send` (MSG_DONTWAIT, and MSG_NOSIGNAL so a reset peer is
 * an EPIPE error rather than a SIGPIPE): bytes sent, or null when the
 * socket buffer is full. Throws SysError.
 */
export function sendSome(fd: number, data: Uint8Array): number | null {
  for (;;) {
    const n = libc().send(
      fd,
      data,
      BigInt(data.byteLength),
      MSG_DONTWAIT | MSG_NOSIGNAL,
    );
    if (n >= 0n) return Number(n);
    const e = errno();
    if (e === E.EINTR) continue;
    if (e === E.EAGAIN) return null;
    throw new SysError("send", e);
  }
}

/**
 * Non-blocking `recv` into `into`: bytes received, 0 at end of stream, or
 * null when nothing is there yet. Throws SysError (ECONNRESET…).
 */
export function recvSome(fd: number, into: Uint8Array): number | null {
  for (;;) {
    const n = libc().recv(fd, into, BigInt(into.byteLength), MSG_DONTWAIT);
    if (n >= 0n) return Number(n);
    const e = errno();
    if (e === E.EINTR) continue;
    if (e === E.EAGAIN) return null;
    throw new SysError("recv", e);
  }
}

/**
 * `shutdown(fd, SHUT_WR)`: sends FIN after whatever is queued; receiving
 * goes on until the peer closes. Throws SysError (ENOTCONN when the peer
 * already reset the connection).
 */
export function shutdownWrite(fd: number): void {
  check(libc().shutdown(fd, SHUT_WR), "shutdown");
}

const lowatValue = new Int32Array(1);

/**
 * `setsockopt(SO_RCVLOWAT)`: epoll reports the socket readable only once
 * `bytes` are queued (or at the end of the stream, or on an error). The
 * kernel caps it at half the receive buffer. Throws SysError.
 */
export function setRecvLowat(fd: number, bytes: number): void {
  lowatValue[0] = bytes;
  check(
    libc().setsockopt(
      fd,
      SOL_SOCKET,
      SO_RCVLOWAT,
      new Uint8Array(lowatValue.buffer),
      4,
    ),
    "setsockopt(SO_RCVLOWAT)",
  );
}
