/**
 * TCP client sockets for the page-server connection: name resolution with
 * the C library's `getaddrinfo` (so /etc/hosts, IPv6 and everything else a
 * CRIU user configured applies), a blocking connect, and non-blocking
 * `send`/`recv` for the daemon's epoll loop.
 *
 * @module
 */
import { E, errno, SysError } from "./errno.ts";
import { libc } from "./libc.ts";

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
// struct addrinfo on x86_64: ai_flags@0, ai_family@4, ai_socktype@8,
// ai_protocol@12, ai_addrlen@16 (u32, then padding), ai_addr@24,
// ai_canonname@32, ai_next@40; 48 bytes.
const ADDRINFO_SIZE = 48;

const encoder = new TextEncoder();

/** A connected TCP socket. */
export interface TcpConnection {
  /** The socket (blocking, close-on-exec; TCP_NODELAY set). */
  fd: number;
  /** The peer as "address:port" ("[v6]:port" for IPv6), for messages. */
  peer: string;
}

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

/**
 * Connects to `host` (a name, an IPv4 or an IPv6 literal) and `port`,
 * trying every address `getaddrinfo` returns in order, like CRIU. Throws
 * Error naming the host and each address's failure.
 */
export function connectTcp(host: string, port: number): TcpConnection {
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
  const failures: string[] = [];
  try {
    for (let ai = head; ai !== null;) {
      const v = new Deno.UnsafePointerView(ai);
      const family = v.getInt32(4);
      const addrlen = v.getUint32(16);
      const addrPtr = v.getPointer(24);
      const next = v.getPointer(40);
      ai = next;
      if (addrPtr === null) continue;
      const addr = new Uint8Array(
        Deno.UnsafePointerView.getArrayBuffer(addrPtr, addrlen).slice(0),
      );
      const name = describeAddr(new Deno.UnsafePointerView(addrPtr), addrlen);
      const fd = libc().socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        failures.push(
          `${name}: socket: ${new SysError("socket", errno()).message}`,
        );
        continue;
      }
      let r: number;
      do r = libc().connect(fd, addr, addrlen); while (
        r < 0 && errno() === E.EINTR
      );
      if (r === 0) {
        const one = new Uint8Array(new Int32Array([1]).buffer);
        libc().setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
        return { fd, peer: name };
      }
      failures.push(`${name}: ${new SysError("connect", errno()).message}`);
      libc().close(fd);
    }
  } finally {
    libc().freeaddrinfo(head);
  }
  throw new Error(
    `cannot connect to ${host} port ${port}: ${
      failures.join("; ") || "no address"
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
